//! The Rust crates the packages' programs are statically linked with, each with its licence:
//! a package of a Rust program ships their code, so its copyright file names them.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The packages' programs, by crate name: their dependency graphs are what is linked.
const PROGRAMS: [&str; 2] = ["builder", "storage-init"];
/// The platforms the packages are built for: a crate linked on either is named.
const PLATFORMS: [&str; 2] = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

/// One crate linked into the programs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BundledCrate {
    pub name: String,
    pub version: String,
    /// Its SPDX licence expression, as its Cargo.toml states it.
    pub license: String,
}

/// The crates `cargo metadata` (from Cargo.lock, `--locked`) finds linked into the programs:
/// their normal dependencies, transitively, on Linux; the workspace's own crates and
/// procedural macros (which run in the compiler and are not linked) left out. Sorted.
pub fn bundled_crates(root: &Path) -> Result<Vec<BundledCrate>> {
    let mut found = BTreeSet::new();
    for platform in PLATFORMS {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .current_dir(root)
            .args(["metadata", "--format-version", "1", "--locked"])
            .args(["--filter-platform", platform])
            .output()
            .context("running cargo metadata")?;
        if !output.status.success() {
            bail!(
                "cargo metadata --locked failed (is Cargo.lock current?): {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        found.extend(linked(&metadata)?);
    }
    Ok(found.into_iter().collect())
}

/// The crates of one `cargo metadata` graph linked into [`PROGRAMS`]. Pure.
fn linked(metadata: &serde_json::Value) -> Result<Vec<BundledCrate>> {
    let text = |value: &serde_json::Value, key: &str| -> String {
        value[key].as_str().unwrap_or_default().to_owned()
    };
    let packages: HashMap<String, &serde_json::Value> = metadata["packages"]
        .as_array()
        .context("cargo metadata: no packages")?
        .iter()
        .map(|p| (text(p, "id"), p))
        .collect();
    let members: BTreeSet<String> = metadata["workspace_members"]
        .as_array()
        .context("cargo metadata: no workspace_members")?
        .iter()
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect();
    let nodes: HashMap<String, &serde_json::Value> = metadata["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata: no resolve graph")?
        .iter()
        .map(|n| (text(n, "id"), n))
        .collect();
    let mut pending: Vec<String> = packages
        .values()
        .filter(|p| PROGRAMS.contains(&p["name"].as_str().unwrap_or_default()))
        .map(|p| text(p, "id"))
        .collect();
    let mut seen = BTreeSet::new();
    while let Some(id) = pending.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        let Some(node) = nodes.get(&id) else {
            continue;
        };
        for dep in node["deps"].as_array().into_iter().flatten() {
            // A null kind is a normal dependency; build and dev dependencies are not linked.
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            if normal {
                pending.push(text(dep, "pkg"));
            }
        }
    }
    let mut crates = Vec::new();
    for id in seen.iter().filter(|id| !members.contains(*id)) {
        let package = packages
            .get(id)
            .with_context(|| format!("cargo metadata: no package {id}"))?;
        let proc_macro = package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "proc-macro"))
            });
        if proc_macro {
            continue;
        }
        let name = text(package, "name");
        let license = package["license"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| {
                format!("crate {name} states no licence: its code cannot be shipped unnamed")
            })?;
        crates.push(BundledCrate {
            name,
            version: text(package, "version"),
            license,
        });
    }
    crates.sort();
    Ok(crates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_programs_link_their_normal_dependencies_only() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let crates = bundled_crates(&root).unwrap();
        let names: Vec<&str> = crates.iter().map(|c| c.name.as_str()).collect();
        // storage-init's one dependency and builder's command line.
        assert!(names.contains(&"rustix"), "{names:?}");
        assert!(names.contains(&"clap"), "{names:?}");
        // Not linked: the workspace's own crates, a dev-dependency, a procedural macro.
        for absent in [
            "builder",
            "storage-init",
            "insta",
            "thiserror-impl",
            "clap_derive",
        ] {
            assert!(!names.contains(&absent), "{absent} in {names:?}");
        }
        assert!(crates.iter().all(|c| !c.license.is_empty()));
    }
}
