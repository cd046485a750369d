//! The `gvisor` tier: `runsc` on an OCI bundle.
//!
//! Not built yet: the tier is probed and reported, and a launch that asks for it fails closed
//! (or uses the fallback the spec names) with this reason.

use std::path::PathBuf;

/// Where `runsc` is, if installed.
pub fn runsc() -> Option<PathBuf> {
    ["/usr/bin/runsc", "/usr/local/bin/runsc", "/usr/sbin/runsc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Why the tier cannot be used on this host.
pub fn unavailable_reason() -> String {
    match runsc() {
        None => "runsc is not installed".into(),
        Some(path) => format!(
            "runsc is installed at {}, but this runner does not drive it yet",
            path.display()
        ),
    }
}
