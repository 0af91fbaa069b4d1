//! What a machine's firmware (SeaBIOS, later OVMF) reads from the VMM: the fw_cfg
//! interface (`fw_cfg`), the SMBIOS tables (`smbios`) and ACPI through the linker/loader
//! (`acpi_loader`). The firmware image's mapping comes here as firmware boot lands.

pub mod acpi_loader;
pub mod fw_cfg;
pub mod smbios;
