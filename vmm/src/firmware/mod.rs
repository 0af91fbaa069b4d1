//! What a machine's firmware (SeaBIOS, later OVMF) reads from the VMM: the fw_cfg
//! interface (`fw_cfg`) and the SMBIOS tables (`smbios`). The ACPI linker/loader and the
//! firmware image's mapping come here as firmware boot lands.

pub mod fw_cfg;
pub mod smbios;
