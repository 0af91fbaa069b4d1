//! The devices behind the i8042's ports: a PS/2 keyboard (`keyboard`), with the scan codes
//! it sends (`scancodes`), and a PS/2 mouse (`mouse`); `output` is the byte queue each
//! holds for the host.

pub mod keyboard;
pub mod mouse;
pub mod output;
pub mod scancodes;
