//! Architecture-specific machine setup. Vessel targets x86-64 hosts and guests.

pub mod x86_64;
