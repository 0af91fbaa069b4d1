//! The devices behind the i8042's ports: a PS/2 keyboard (`keyboard`), with the scan codes
//! it sends (`scancodes`).

pub mod keyboard;
pub mod scancodes;
