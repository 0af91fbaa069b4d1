//! The x86-64 platform: memory layout, boot protocols, CPUID, registers and ACPI tables.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod layout;
pub mod regs;
