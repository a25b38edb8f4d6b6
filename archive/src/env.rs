//! The environment component of a run's identity: what, besides code and data, can change a
//! result's bits. Matmul kernels built for AVX-512 instead of AVX2 change the first loss, so
//! the CPU model and its features are part of it; so are the compiler and the thread count.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The machine and toolchain a run ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// `rustc --version` of the compiler that built recipe.
    pub rustc: String,
    /// Operating system and architecture, e.g. `linux-x86_64`.
    pub os: String,
    /// The CPU's model name as the OS reports it.
    pub cpu_model: String,
    /// The SIMD features detected at run time that numeric kernels may dispatch on.
    pub cpu_features: Vec<String>,
    /// Worker threads the numeric code uses.
    pub threads: usize,
    /// `cpu`, or the accelerator (`cuda:0`).
    pub device: String,
    /// Versions of the crates that compute (recipe-archive, and candle once the runtime adds it).
    pub crates: BTreeMap<String, String>,
}

impl Environment {
    /// This process's environment. Threads come from `RAYON_NUM_THREADS` when it is set (what
    /// candle's pool obeys), else the available parallelism.
    pub fn capture() -> Environment {
        let threads = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Environment {
            rustc: env!("RECIPE_RUSTC_VERSION").to_string(),
            os: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
            cpu_model: cpu_model(),
            cpu_features: cpu_features(),
            threads,
            device: "cpu".into(),
            crates: [(
                "recipe-archive".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )]
            .into(),
        }
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[cfg(target_arch = "x86_64")]
fn cpu_features() -> Vec<String> {
    let mut found = Vec::new();
    macro_rules! probe {
        ($($feature:tt),*) => {$(
            if std::is_x86_feature_detected!($feature) {
                found.push($feature.to_string());
            }
        )*};
    }
    probe!(
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512vnni",
        "avx512bf16"
    );
    found
}

#[cfg(target_arch = "aarch64")]
fn cpu_features() -> Vec<String> {
    let mut found = Vec::new();
    macro_rules! probe {
        ($($feature:tt),*) => {$(
            if std::arch::is_aarch64_feature_detected!($feature) {
                found.push($feature.to_string());
            }
        )*};
    }
    probe!("neon", "fp16", "sve", "sve2");
    found
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_features() -> Vec<String> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    #[test]
    fn captures_something_real() {
        let env = super::Environment::capture();
        assert!(env.rustc.starts_with("rustc "), "{}", env.rustc);
        assert!(env.threads >= 1);
        assert!(!env.cpu_model.is_empty());
    }
}
