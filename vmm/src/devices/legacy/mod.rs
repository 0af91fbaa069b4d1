//! PC legacy devices: COM1, the i8042's reset line, CMOS/RTC, the ACPI sleep and reset
//! registers, the Generic Event Device and the debug port.

pub mod acpi_pm;
pub mod cmos;
pub mod debug_port;
pub mod ged;
pub mod i8042;
pub mod serial;
