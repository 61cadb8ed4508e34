//! Quoting an argv as one POSIX shell line, so a person can paste a recorded command.

/// Characters that never need quoting in a POSIX shell word.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c)
}

/// One argument as a shell word: unchanged when plain, else in single quotes.
pub fn quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(is_plain) {
        return arg.to_owned();
    }
    // Inside single quotes only `'` is special: close, escape it, reopen.
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// The whole argv as one line.
pub fn join(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| quote(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(arg: &str, expected: &str) {
        assert_eq!(quote(arg), expected);
    }

    #[test]
    fn quotes_only_when_needed() {
        check("-machine", "-machine");
        check("file=/a/b.img,format=raw", "file=/a/b.img,format=raw");
        check("", "''");
        check("console=ttyS0 quiet", "'console=ttyS0 quiet'");
        check("it's", r"'it'\''s'");
        check("$HOME", "'$HOME'");
    }
}
