//! The layers of ARCHITECTURE.md, held over the `use` lines of the sources:
//! no module imports in a circle, nothing in the engine imports the
//! operations layer above it, and the front ends reach no engine module
//! beyond those listed here (each a step still to move behind `ops`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace's root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read the source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The source without its comments' lines (doc links name modules too).
fn code_of(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("read a source file")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segment after each `prefix` in `code`, the segments of a
/// `prefix{a, b::c}` group included.
fn segments_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            found.insert(ident(&item));
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|s| !s.is_empty() && s != "self");
    found
}

/// Which top-level modules of the crate rooted at `root` each one imports
/// (`crate::x`, and `super::x` from a top-level module's own file). Files
/// directly in `root` named in `roots` are the crate roots, not modules.
fn module_graph(root: &Path, roots: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(root) {
        let rel = file.strip_prefix(root).expect("under the root");
        let parts: Vec<&str> = rel.iter().filter_map(|p| p.to_str()).collect();
        let module = parts[0].trim_end_matches(".rs").to_string();
        if parts.len() == 1 && roots.contains(&module.as_str()) {
            continue;
        }
        let top_file = parts.len() == 1 || (parts.len() == 2 && parts[1] == "mod.rs");
        let code = code_of(&file);
        let mut uses = segments_after(&code, "crate::");
        if top_file {
            uses.extend(segments_after(&code, "super::"));
        }
        uses.remove(&module);
        graph.entry(module).or_default().extend(uses);
    }
    graph
}

/// A circle in `graph`, if there is one, as the modules around it.
fn a_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(graph, next, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(graph, node, &mut Vec::new(), &mut done))
}

/// The engine: the library crate's modules, its CLI front end apart.
fn engine_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = module_graph(&workspace().join("appliance/src"), &["lib", "main"]);
    graph.remove("cli");
    graph
}

#[test]
fn no_module_imports_in_a_circle() {
    let ws = workspace();
    for (layer, graph) in [
        ("the engine (appliance/src)", engine_graph()),
        (
            "the CLI (appliance/src/cli)",
            module_graph(&ws.join("appliance/src/cli"), &["mod"]),
        ),
        (
            "the TUI (recovery-tui/src)",
            module_graph(&ws.join("recovery-tui/src"), &["lib", "main"]),
        ),
        ("the image format (image-format/src)", {
            module_graph(&ws.join("image-format/src"), &["lib"])
        }),
    ] {
        assert_eq!(a_circle(&graph), None, "{layer} imports in a circle");
    }
}

#[test]
fn the_engine_never_imports_the_operations_layer() {
    let graph = engine_graph();
    assert!(graph.contains_key("ops"), "no ops module found: {graph:?}");
    let below: Vec<&String> = graph
        .iter()
        .filter(|(module, uses)| *module != "ops" && uses.contains("ops"))
        .map(|(module, _)| module)
        .collect();
    assert!(
        below.is_empty(),
        "{below:?} import ops, the layer above them"
    );
}

/// The engine modules each front end still reaches past `ops`. Each is a
/// step still to take: a new one fails here, so new front-end work goes
/// through `ops`; moving one behind `ops` shortens its list.
const FRONT_ENDS: [(&str, &[&str]); 2] = [
    (
        "appliance/src/cli",
        &[
            "audit",
            "capture",
            "discover",
            "error_chain",
            "exit",
            "operators",
            "ops",
            "partition",
            "report",
            "restore",
            "safety",
            "stick",
            "sys",
            "verify",
        ],
    ),
    (
        "recovery-tui/src",
        &[
            "audit",
            "capture",
            "error_chain",
            "operators",
            "ops",
            "report",
            "restore",
            "safety",
        ],
    ),
];

#[test]
fn front_ends_reach_no_engine_module_beyond_their_list() {
    let ws = workspace();
    for (front_end, allowed) in FRONT_ENDS {
        let mut reached = BTreeSet::new();
        for file in rust_files(&ws.join(front_end)) {
            reached.extend(segments_after(&code_of(&file), "reliquary_appliance::"));
        }
        let beyond: Vec<&String> = reached
            .iter()
            .filter(|m| !allowed.contains(&m.as_str()))
            .collect();
        assert!(
            beyond.is_empty(),
            "{front_end} reaches {beyond:?} of the engine: go through reliquary_appliance::ops"
        );
        let moved: Vec<&&str> = allowed.iter().filter(|m| !reached.contains(**m)).collect();
        assert!(
            moved.is_empty(),
            "{front_end} no longer reaches {moved:?}: take them off its list"
        );
    }
}

#[test]
fn the_import_scanner_reads_groups_paths_and_skips_longer_names() {
    let code = "use crate::{a::b, c, d::{e, f}};\nlet x = crate::g::h();\nmy_crate::z;";
    let found: Vec<String> = segments_after(code, "crate::").into_iter().collect();
    assert_eq!(found, ["a", "c", "d", "g"]);
    let mut circle = BTreeMap::new();
    circle.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    circle.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert!(a_circle(&circle).is_some());
    circle.get_mut("b").map(BTreeSet::clear);
    assert_eq!(a_circle(&circle), None);
}
