//! The harness's modules form layers that depend only downward (ARCHITECTURE.md, "xtask"):
//! a module may use its own layer or the ones below, never one above, and no two modules
//! depend on each other, directly or around a loop. Read from the source as text: every
//! `crate::<module>` path outside `#[cfg(test)]` code is an edge. Test code may reach anywhere
//! (a report's test builds its samples with the benchmark's profiles).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, lowest first, and the modules of each. A new module of `xtask/src/lib.rs` must
/// be placed here.
const LAYERS: &[(&str, &[&str])] = &[
    // Pure values parsed from fixtures/*.toml: what a cell is, what its disk holds, which
    // packages are pinned.
    ("spec", &["disk_spec", "pins", "cells"]),
    // The host's tools and the pinned packages, fetched, verified and unpacked into the cache.
    (
        "fixtures",
        &[
            "provision",
            "download",
            "deb",
            "rpm",
            "rpm_repo",
            "fixture_cache",
            "rpm_fixture",
            "fixtures",
            "debian_tree",
            "dracut_fixture",
            "bench_content",
        ],
    ),
    // Pure: a cell and its artefacts (as data) in, the QEMU machine and the milestones out;
    // the machine every other boot starts from. Below build, whose own VMs use it.
    ("plan", &["plan"]),
    // A cell's or a benchmark chain's artefacts: binaries, images, disks, keys, UKIs.
    (
        "build",
        &[
            "static_build",
            "dogfood",
            "secure_boot",
            "kernel_install",
            "images",
            "root_storage",
            "boot_probe",
            "bench_peers",
        ],
    ),
    // What runs QEMU beyond the testvm crate: the accelerator and its probe.
    ("run", &["accel"]),
    // Pure readings of what a run left: verdicts, console parsing, the guest's samples.
    ("judge", &["verdict", "boot_log", "guest_samples"]),
    // Pure renderings of judged runs.
    ("report", &["vm_report", "bench_report"]),
    // The `cargo xtask` tasks, which drive the layers above, and the command line.
    (
        "tasks",
        &[
            "vm_test",
            "bench_boot",
            "bench_storage_init",
            "test",
            "fuzz",
            "matrix_doc",
            "dist",
            "cli",
        ],
    ),
];

fn src() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))
}

/// The modules `lib.rs` declares (`pub mod x;`).
fn declared_modules(lib_rs: &str) -> BTreeSet<String> {
    lib_rs
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("mod "))?;
            Some(rest.strip_suffix(';')?.to_owned())
        })
        .collect()
}

/// `source` without its `#[cfg(test)]` items (each a braced block: the test module).
fn without_test_code(source: &str) -> String {
    let mut out = String::new();
    let mut rest = source;
    while let Some(start) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let Some(open) = after.find('{') else {
            return out;
        };
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(open + i + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        match end {
            Some(end) => rest = &after[end..],
            // Unbalanced (a brace in a string): treat the rest as test code.
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// The crate modules `source` names: `crate::x` and `crate::{x, y::z}`, comment lines
/// excluded.
fn referenced_modules(source: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code: String = without_test_code(source)
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            top_level_items(group)
                .into_iter()
                .map(|item| item.split("::").next().unwrap_or("").trim())
                .collect()
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            vec![&rest[..end]]
        };
        for name in names {
            if modules.contains(name) {
                found.insert(name.to_owned());
            }
        }
    }
    found
}

/// The comma-separated items of a `use` group up to its closing brace (`group` starts after
/// the opening one), nested groups kept whole.
fn top_level_items(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(group[start..i].trim());
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(group[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(group[start..].trim());
    items
}

/// Every module's source, a directory module's files joined (its `tests.rs` left out).
fn module_sources(modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    modules
        .iter()
        .map(|module| {
            let file = src().join(format!("{module}.rs"));
            let dir = src().join(module);
            let mut text = std::fs::read_to_string(&file).unwrap_or_default();
            if dir.is_dir() {
                let mut files: Vec<_> = std::fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| {
                        p.extension().is_some_and(|x| x == "rs")
                            && p.file_name().is_some_and(|n| n != "tests.rs")
                    })
                    .collect();
                files.sort();
                for path in files {
                    text.push_str(&std::fs::read_to_string(path).unwrap());
                }
            }
            assert!(!text.is_empty(), "no source for module {module}");
            (module.clone(), text)
        })
        .collect()
}

fn layer_of() -> BTreeMap<&'static str, (usize, &'static str)> {
    let mut map = BTreeMap::new();
    for (index, (layer, modules)) in LAYERS.iter().enumerate() {
        for module in *modules {
            assert!(
                map.insert(*module, (index, *layer)).is_none(),
                "{module} is placed in two layers"
            );
        }
    }
    map
}

fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let modules = declared_modules(&lib);
    module_sources(&modules)
        .into_iter()
        .map(|(module, source)| {
            let mut uses = referenced_modules(&source, &modules);
            uses.remove(&module);
            (module, uses)
        })
        .collect()
}

#[test]
fn every_module_has_a_layer() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let declared = declared_modules(&lib);
    let placed: BTreeSet<String> = layer_of().keys().map(|m| m.to_string()).collect();
    let unplaced: Vec<_> = declared.difference(&placed).collect();
    let gone: Vec<_> = placed.difference(&declared).collect();
    assert!(
        unplaced.is_empty(),
        "modules of lib.rs with no layer in tests/layers.rs: {unplaced:?}"
    );
    assert!(
        gone.is_empty(),
        "tests/layers.rs places modules lib.rs does not declare: {gone:?}"
    );
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let layers = layer_of();
    let mut upward = Vec::new();
    for (module, uses) in edges() {
        let Some(&(own, own_name)) = layers.get(module.as_str()) else {
            continue; // every_module_has_a_layer reports it
        };
        for used in uses {
            if let Some(&(theirs, their_name)) = layers.get(used.as_str())
                && theirs > own
            {
                upward.push(format!("{module} ({own_name}) uses {used} ({their_name})"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up a layer:\n  {}",
        upward.join("\n  ")
    );
}

#[test]
fn no_import_cycle() {
    let edges = edges();
    // Depth-first search; a grey node met again closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        White,
        Grey,
        Black,
    }
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_owned(), Mark::Grey);
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            match marks.get(next).copied().unwrap_or(Mark::White) {
                Mark::Grey => {
                    let from = path.iter().position(|m| m == next).unwrap();
                    let mut cycle = path[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::White => {
                    if let Some(cycle) = visit(next, edges, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Black => {}
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Black);
        None
    }
    let mut marks = BTreeMap::new();
    for node in edges.keys() {
        if marks.get(node).copied().unwrap_or(Mark::White) == Mark::White
            && let Some(cycle) = visit(node, &edges, &mut marks, &mut Vec::new())
        {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

/// The reader itself: what it must and must not count as an edge.
#[test]
fn references_are_read_from_code_only() {
    let modules: BTreeSet<String> = ["cells", "fixtures", "images", "pins", "verdict"]
        .into_iter()
        .map(String::from)
        .collect();
    let source = "\
use crate::cells::Cell;
use crate::{fixtures::{self, Kernel}, pins};
// crate::images in a comment is not an edge
fn f() { crate::verdict::scan(); crate::not_a_module::x(); }
#[cfg(test)]
mod tests {
    use crate::images::Layout;
    fn g() { let s = format!(\"{}\", 1); }
}
";
    let found = referenced_modules(source, &modules);
    let expected: BTreeSet<String> = ["cells", "fixtures", "pins", "verdict"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, expected);
    assert_eq!(
        declared_modules("pub mod a;\nmod b;\n// pub mod c;\npub use x;\n"),
        ["a", "b"].into_iter().map(String::from).collect()
    );
}
