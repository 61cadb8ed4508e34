//! The commands storage-init's messages tell a user to run exist: every `` `builder <subcommand>
//! …` `` in its source names a subcommand of builder's CLI (not an alias kept for old scripts),
//! and every `--option` there is an option builder's CLI has. builder/src/cli.rs is read as
//! text: storage-init depends on no other workspace crate.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
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

/// `InitramfsArgs` -> `initramfs-args`, `bootfs_hint` -> `bootfs-hint`: clap's default names.
fn kebab(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else if c == '_' {
            out.push('-');
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of `key = "…"` inside an attribute line, if it has one.
fn attribute_value(line: &str, key: &str) -> Option<String> {
    let rest = &line[line.find(&format!("{key} = \""))? + key.len() + 4..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// builder's CLI as its source declares it: the subcommands (the variants of `enum Command`,
/// or their `#[command(name = …)]`) and every long option of every argument struct.
struct BuilderCli {
    subcommands: BTreeSet<String>,
    options: BTreeSet<String>,
}

fn builder_cli(source: &str) -> BuilderCli {
    let mut subcommands = BTreeSet::new();
    let mut options = BTreeSet::new();
    let mut in_command_enum = false;
    let mut renamed: Option<String> = None;
    // An `#[arg(…)]` attribute being read (it may span lines), then whether it was `long`.
    let mut attribute: Option<String> = None;
    let mut long: Option<Option<String>> = None;
    for line in source.lines() {
        let trimmed = line.trim();
        if trimmed
            .trim_start_matches("pub ")
            .starts_with("enum Command {")
        {
            in_command_enum = true;
            continue;
        }
        if in_command_enum {
            if line == "}" {
                in_command_enum = false;
            } else if trimmed.starts_with("#[command(") {
                renamed = attribute_value(trimmed, "name");
            } else if line.starts_with("    ")
                && !line.starts_with("     ")
                && trimmed.starts_with(|c: char| c.is_ascii_uppercase())
            {
                let variant: String = trimmed
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                subcommands.insert(renamed.take().unwrap_or_else(|| kebab(&variant)));
            }
        }
        if trimmed.starts_with("#[arg(") {
            attribute = Some(String::new());
        }
        if let Some(text) = &mut attribute {
            text.push_str(trimmed);
            text.push(' ');
            if trimmed.ends_with(")]") {
                let is_long = text
                    .split(|c: char| c == '(' || c == ')' || c == ',' || c.is_whitespace())
                    .any(|token| token == "long");
                long = is_long.then(|| attribute_value(text, "long"));
                attribute = None;
            }
            continue;
        }
        // The field an `#[arg(long…)]` names: `name: Type,`.
        if let Some(explicit) = long.take() {
            let field = trimmed
                .split_once(':')
                .map(|(f, _)| f.trim_start_matches("pub "));
            match field {
                Some(field) if field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    options.insert(explicit.unwrap_or_else(|| kebab(field)));
                }
                // A doc comment or another attribute between: still waiting for the field.
                _ => long = Some(explicit),
            }
        }
    }
    BuilderCli {
        subcommands,
        options,
    }
}

/// Every `` `builder …` `` span of `text`: the text between the backticks.
fn builder_spans(text: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("`builder ") {
        let after = &rest[start + 1..];
        let Some(end) = after.find('`') else { break };
        spans.push(&after[..end]);
        rest = &after[end + 1..];
    }
    spans
}

#[test]
fn builder_commands_in_messages_exist() {
    let main = manifest_dir().join("../builder/src/cli.rs");
    let source = std::fs::read_to_string(&main)
        .unwrap_or_else(|e| panic!("{}: {e} (builder's CLI, read as text)", main.display()));
    let cli = builder_cli(&source);
    for expected in ["image", "initramfs", "config", "install"] {
        assert!(
            cli.subcommands.contains(expected),
            "the reading of {} found no `{expected}` subcommand: {:?}",
            main.display(),
            cli.subcommands
        );
    }
    for expected in ["kver", "image", "bootfstype", "fstype", "bootfs", "verity"] {
        assert!(
            cli.options.contains(expected),
            "the reading of {} found no --{expected}: {:?}",
            main.display(),
            cli.options
        );
    }

    let mut named = 0;
    let mut wrong = Vec::new();
    for file in rust_files(&manifest_dir().join("src")) {
        let text = std::fs::read_to_string(&file).expect("a source file");
        for span in builder_spans(&text) {
            named += 1;
            let words: Vec<&str> = span.split_whitespace().collect();
            let subcommand: String = words[1]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            // `builder … --image`: any subcommand; the options are still checked.
            if !subcommand.is_empty() && !cli.subcommands.contains(&subcommand) {
                wrong.push(format!(
                    "{}: `{span}`: builder has no subcommand `{subcommand}`",
                    file.display()
                ));
            }
            for word in &words[2..] {
                let Some(option) = word.strip_prefix("--") else {
                    continue;
                };
                let option: String = option
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if !cli.options.contains(&option) {
                    wrong.push(format!(
                        "{}: `{span}`: builder has no option --{option}",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(
        named > 0,
        "no `builder …` command found in storage-init/src"
    );
    assert!(
        wrong.is_empty(),
        "storage-init names builder commands its CLI does not have (subcommands: {:?}):\n{}",
        cli.subcommands,
        wrong.join("\n")
    );
}

#[test]
fn reading_a_cli_source() {
    let source = r#"
enum Command {
    /// Doc.
    #[command(alias = "erofs")]
    Image(ImageArgs),
    #[command(name = "mini")]
    Initramfs(InitramfsArgs),
    List {
        /// The path.
        path: PathBuf,
    },
    UnpackAll,
}

struct ImageArgs {
    /// Doc.
    #[arg(long)]
    kernel_root: PathBuf,
    #[arg(long = "module", value_delimiter = ',')]
    modules: Vec<String>,
    #[arg(
        long,
        required_unless_present = "initramfs",
    )]
    source: Option<PathBuf>,
    #[arg(short)]
    output: PathBuf,
}
"#;
    let cli = builder_cli(source);
    assert_eq!(
        cli.subcommands
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["image", "list", "mini", "unpack-all"]
    );
    assert_eq!(
        cli.options.iter().map(String::as_str).collect::<Vec<_>>(),
        ["kernel-root", "module", "source"]
    );
    assert_eq!(
        builder_spans("a `builder image --verity` b `builder … --image` `x`"),
        ["builder image --verity", "builder … --image"]
    );
}
