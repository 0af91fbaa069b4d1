//! PC legacy devices: COM1, the i8042 keyboard controller with its PS/2 keyboard (`ps2`),
//! CMOS/RTC, the ACPI sleep and reset registers, the Generic Event Device and the debug
//! port.

pub mod acpi_pm;
pub mod cmos;
pub mod debug_port;
pub mod ged;
pub mod i8042;
pub mod ps2;
pub mod serial;
