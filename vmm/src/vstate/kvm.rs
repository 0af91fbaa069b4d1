//! Opening `/dev/kvm` and checking what the host's KVM can do, with errors a user can act on.

use kvm_ioctls::{Cap, Kvm};

/// What can go wrong before a VM exists.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error(
        "/dev/kvm does not exist — this host has no KVM. Enable virtualization (VT-x/AMD-V) in \
         the firmware settings and load the kvm_intel or kvm_amd module"
    )]
    NotPresent,
    #[error(
        "/dev/kvm: permission denied — add yourself to the 'kvm' group: \
         sudo usermod -aG kvm $USER, then log in again"
    )]
    PermissionDenied,
    #[error("cannot open /dev/kvm")]
    Open(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not supported (Vessel needs version 12)")]
    ApiVersion(i32),
    #[error(
        "this host's KVM lacks capabilities Vessel needs: {0}. Update the host kernel, or use a \
         host with hardware virtualization"
    )]
    MissingCapabilities(String),
}

/// What a failed open of the KVM device means to the user.
fn open_error(e: kvm_ioctls::Error) -> KvmError {
    match e.errno() {
        libc::ENOENT | libc::ENXIO | libc::ENODEV => KvmError::NotPresent,
        libc::EACCES | libc::EPERM => KvmError::PermissionDenied,
        _ => KvmError::Open(e),
    }
}

/// Capabilities every Vessel machine needs, with a name a user can search for.
const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (Cap::Irqchip, "in-kernel irqchip (KVM_CAP_IRQCHIP)"),
    (Cap::Pit2, "in-kernel PIT (KVM_CAP_PIT2)"),
    (Cap::Irqfd, "irqfd (KVM_CAP_IRQFD)"),
    (Cap::Ioeventfd, "ioeventfd (KVM_CAP_IOEVENTFD)"),
    (Cap::UserMemory, "user memory slots (KVM_CAP_USER_MEMORY)"),
    (Cap::SetTssAddr, "TSS address (KVM_CAP_SET_TSS_ADDR)"),
    (Cap::SetIdentityMapAddr, "identity map address (KVM_CAP_SET_IDENTITY_MAP_ADDR)"),
    (Cap::ExtCpuid, "CPUID (KVM_CAP_EXT_CPUID)"),
    (Cap::Xcrs, "XCRs (KVM_CAP_XCRS)"),
];

/// Opens `/dev/kvm` and checks the API version and the capabilities Vessel relies on.
pub fn open_kvm() -> Result<Kvm, KvmError> {
    open_kvm_at(c"/dev/kvm")
}

/// `open_kvm` on another device node (tests use a missing one).
pub fn open_kvm_at(path: &std::ffi::CStr) -> Result<Kvm, KvmError> {
    let kvm = Kvm::new_with_path(path).map_err(open_error)?;
    let version = kvm.get_api_version();
    if version != kvm_bindings::KVM_API_VERSION as i32 {
        return Err(KvmError::ApiVersion(version));
    }
    let missing: Vec<&str> = REQUIRED_CAPS
        .iter()
        .filter(|(cap, _)| !kvm.check_extension(*cap))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(KvmError::MissingCapabilities(missing.join(", ")));
    }
    Ok(kvm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        assert!(KvmError::PermissionDenied.to_string().contains("usermod -aG kvm"));
        assert!(KvmError::NotPresent.to_string().contains("kvm_intel"));
    }

    #[test]
    fn open_errors_are_classified() {
        assert!(matches!(open_kvm_at(c"/nonexistent/kvm"), Err(KvmError::NotPresent)));
        let denied = open_error(kvm_ioctls::Error::new(libc::EACCES));
        assert!(matches!(denied, KvmError::PermissionDenied));
        let other = open_error(kvm_ioctls::Error::new(libc::EIO));
        assert!(matches!(other, KvmError::Open(_)));
    }

    #[test]
    fn opens_kvm_when_present() {
        if std::path::Path::new("/dev/kvm").exists() {
            open_kvm().expect("this host has /dev/kvm; it should open");
        } else {
            assert!(matches!(open_kvm(), Err(KvmError::NotPresent)));
        }
    }
}
