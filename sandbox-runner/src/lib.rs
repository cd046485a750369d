//! `sandbox-runner`: starts one MCP server, or one command, inside an isolation tier, relays its
//! stream, enforces its limits and reports what happened. See [`protocol`] for the wire format
//! between the gateway and the runner, and `ARCHITECTURE.md` for how the tiers are built.
//!
//! Unsafe code is allowed in this crate alone, for what only system calls can do
//! (`clone`, `fork`, `prctl`, `capset`, `ioctl`), in the modules that make them; each
//! block says why it is sound.

pub mod cgroup;
pub mod cli;
mod confine;
pub mod gvisor;
mod namespaces;
pub mod probe;
pub mod protocol;
mod proxy;
pub mod sandbox;
mod shim;
pub mod supervise;

pub use namespaces::{HOSTNAME, INSIDE_ID, PROXY_PORT, SYSTEM_DIRS};

/// Parses a size such as `512M`, `1GiB`, `65536`, in bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (like 512M or 1GiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` in `{text}`")),
    };
    Ok((number * factor as f64) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("512M"), Ok(512 << 20));
        assert_eq!(super::parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(super::parse_size("4096"), Ok(4096));
        assert!(super::parse_size("ten").is_err());
        assert!(super::parse_size("1T").is_err());
    }
}
