//! An RPM repository's metadata, as dnf reads it: `repodata/repomd.xml` names the `primary`
//! file (its path and sha256), which lists every package with its version, the sha256 of its
//! file and where the file lives. The XML is read with `quick-xml`, streaming: Fedora's
//! primary file is over 100 MB.

use anyhow::{Context, Result, bail};
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

/// A file the metadata points to: its path relative to the repository and its sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub href: String,
    pub sha256: String,
}

/// One package of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPackage {
    pub name: String,
    pub arch: String,
    pub epoch: String,
    pub version: String,
    pub release: String,
    pub file: Location,
}

impl RepoPackage {
    /// `version-release`, with `epoch:` when the epoch is not 0.
    pub fn evr(&self) -> String {
        match self.epoch.as_str() {
            "" | "0" => format!("{}-{}", self.version, self.release),
            epoch => format!("{epoch}:{}-{}", self.version, self.release),
        }
    }

    pub fn same_build(&self, other: &RepoPackage) -> bool {
        (&self.epoch, &self.version, &self.release, &self.arch)
            == (&other.epoch, &other.version, &other.release, &other.arch)
    }
}

fn attribute(element: &BytesStart, name: &str) -> Result<Option<String>> {
    for attribute in element.attributes() {
        let attribute = attribute.context("malformed XML attribute")?;
        if attribute.key.local_name().as_ref() == name {
            let value = attribute
                .normalized_value(XmlVersion::Implicit1_0)
                .context("malformed XML attribute value")?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

/// The `primary` metadata file named by `repomd.xml`.
pub fn primary_location(repomd: &str) -> Result<Location> {
    let mut reader = quick_xml::Reader::from_str(repomd);
    let mut in_primary = false;
    let mut in_checksum = false;
    let (mut href, mut sha256) = (None, None);
    loop {
        let event = reader
            .read_event()
            .with_context(|| format!("repomd.xml at byte {}", reader.buffer_position()))?;
        match event {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                "data" => in_primary = attribute(&e, "type")?.as_deref() == Some("primary"),
                "checksum" if in_primary => {
                    let kind = attribute(&e, "type")?.unwrap_or_default();
                    if kind != "sha256" {
                        bail!(
                            "repomd.xml: the primary file's checksum is {kind:?}, only sha256 is verified"
                        );
                    }
                    in_checksum = true;
                }
                "location" if in_primary => href = attribute(&e, "href")?,
                _ => {}
            },
            Event::Text(text) if in_checksum => {
                sha256 = Some(text.trim().to_owned());
            }
            Event::End(e) => match e.local_name().as_ref() {
                "checksum" => in_checksum = false,
                "data" if in_primary => break,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    match (href, sha256) {
        (Some(href), Some(sha256)) => Ok(Location { href, sha256 }),
        _ => bail!("repomd.xml names no primary file with a sha256 checksum and a location"),
    }
}

/// The packages of `primary.xml` whose name is one of `names`, built for `arch`.
pub fn packages(primary: &str, names: &[String], arch: &str) -> Result<Vec<RepoPackage>> {
    let mut reader = quick_xml::Reader::from_str(primary);
    let mut found = Vec::new();
    // Depth below the current <package>: its own children are at depth 1 (a <name> deeper
    // down, such as a dependency's, is not the package's).
    let mut depth = 0usize;
    let mut current: Option<RepoPackage> = None;
    let mut text_field: Option<&'static str> = None;
    let empty = || RepoPackage {
        name: String::new(),
        arch: String::new(),
        epoch: String::new(),
        version: String::new(),
        release: String::new(),
        file: Location {
            href: String::new(),
            sha256: String::new(),
        },
    };
    loop {
        let position = reader.buffer_position();
        let event = reader
            .read_event()
            .with_context(|| format!("primary.xml at byte {position}"))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_start = matches!(event, Event::Start(_));
                let local = e.local_name();
                if let Some(package) = current.as_mut() {
                    if depth == 1 {
                        match local.as_ref() {
                            "name" => text_field = Some("name"),
                            "arch" => text_field = Some("arch"),
                            "checksum" => {
                                let kind = attribute(e, "type")?.unwrap_or_default();
                                if kind != "sha256" {
                                    bail!(
                                        "primary.xml at byte {position}: a package checksum of type {kind:?}; only sha256 is verified"
                                    );
                                }
                                text_field = Some("checksum");
                            }
                            "version" => {
                                package.epoch = attribute(e, "epoch")?.unwrap_or_default();
                                package.version = attribute(e, "ver")?.unwrap_or_default();
                                package.release = attribute(e, "rel")?.unwrap_or_default();
                            }
                            "location" => {
                                package.file.href = attribute(e, "href")?.unwrap_or_default();
                            }
                            _ => {}
                        }
                    }
                    if is_start {
                        depth += 1;
                    }
                } else if local.as_ref() == "package" && is_start {
                    current = Some(empty());
                    depth = 1;
                }
            }
            Event::Text(text) => {
                if let (Some(field), Some(package)) = (text_field, current.as_mut()) {
                    let value = text.trim().to_owned();
                    match field {
                        "name" => package.name = value,
                        "arch" => package.arch = value,
                        _ => package.file.sha256 = value,
                    }
                }
            }
            Event::End(_) => {
                text_field = None;
                if current.is_some() {
                    depth -= 1;
                    if depth == 0
                        && let Some(package) = current.take()
                        && package.arch == arch
                        && names.contains(&package.name)
                    {
                        if package.file.href.is_empty() || package.file.sha256.len() != 64 {
                            bail!(
                                "primary.xml at byte {position}: package {} {} has no location or no sha256",
                                package.name,
                                package.evr()
                            );
                        }
                        found.push(package);
                    }
                }
            }
            Event::Eof if current.is_some() => bail!("primary.xml ends inside a <package>"),
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(found)
}

/// rpm's version comparison (`rpmvercmp`): alternating runs of digits (compared as numbers)
/// and letters (compared as text), separators ignored, `~` sorting before anything (even the
/// end) and `^` after the end but before anything else.
pub fn rpmvercmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    let is_separator = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    loop {
        while let [c, rest @ ..] = a
            && is_separator(*c)
        {
            a = rest;
        }
        while let [c, rest @ ..] = b
            && is_separator(*c)
        {
            b = rest;
        }
        match (a.first(), b.first()) {
            (Some(b'~'), Some(b'~')) => {
                (a, b) = (&a[1..], &b[1..]);
                continue;
            }
            (Some(b'~'), _) => return Ordering::Less,
            (_, Some(b'~')) => return Ordering::Greater,
            (Some(b'^'), Some(b'^')) => {
                (a, b) = (&a[1..], &b[1..]);
                continue;
            }
            (Some(b'^'), None) => return Ordering::Greater,
            (None, Some(b'^')) => return Ordering::Less,
            (Some(b'^'), _) => return Ordering::Less,
            (_, Some(b'^')) => return Ordering::Greater,
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            _ => {}
        }
        let numeric = a[0].is_ascii_digit();
        let run = |s: &[u8]| {
            s.iter()
                .take_while(|c| {
                    if numeric {
                        c.is_ascii_digit()
                    } else {
                        c.is_ascii_alphabetic()
                    }
                })
                .count()
        };
        let (la, lb) = (run(a), run(b));
        if lb == 0 {
            // A number is newer than letters.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let (ra, rb) = (&a[..la], &b[..lb]);
        let order = if numeric {
            let trim = |s: &'_ [u8]| -> usize { s.iter().take_while(|&&c| c == b'0').count() };
            let (ra, rb) = (&ra[trim(ra)..], &rb[trim(rb)..]);
            ra.len().cmp(&rb.len()).then_with(|| ra.cmp(rb))
        } else {
            ra.cmp(rb)
        };
        if order != Ordering::Equal {
            return order;
        }
        (a, b) = (&a[la..], &b[lb..]);
    }
}

/// Orders two builds as rpm does: epoch, then version, then release.
pub fn compare_evr(a: &RepoPackage, b: &RepoPackage) -> std::cmp::Ordering {
    let epoch = |p: &RepoPackage| p.epoch.parse::<u64>().unwrap_or(0);
    epoch(a)
        .cmp(&epoch(b))
        .then_with(|| rpmvercmp(&a.version, &b.version))
        .then_with(|| rpmvercmp(&a.release, &b.release))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::{Equal, Greater, Less};

    #[test]
    fn versions_compare_as_rpm_does() {
        // From rpm's own test suite (tests/rpmvercmp.at).
        for (a, b, order) in [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0", Greater),
            ("5.5p10", "5.5p1", Greater),
            ("10xyz", "10.1xyz", Less),
            ("xyz10", "xyz10.1", Less),
            ("1.0", "1.0a", Less),
            ("10", "9", Greater),
            ("1.0010", "1.9", Greater),
            ("1.05", "1.5", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0^", "1.0", Greater),
            ("1.0^git1", "1.01", Less),
            ("1.0^git1~pre", "1.0^git1", Less),
            ("6.17.8", "6.17.10", Less),
            ("300.fc43", "200.fc43", Greater),
            ("a", "1", Less),
        ] {
            assert_eq!(rpmvercmp(a, b), order, "{a} vs {b}");
            assert_eq!(rpmvercmp(b, a), order.reverse(), "{b} vs {a}");
        }
    }

    const REPOMD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1</revision>
  <data type="filelists">
    <checksum type="sha256">1111111111111111111111111111111111111111111111111111111111111111</checksum>
    <location href="repodata/x-filelists.xml.zst"/>
  </data>
  <data type="primary">
    <checksum type="sha256">2222222222222222222222222222222222222222222222222222222222222222</checksum>
    <open-checksum type="sha256">3333333333333333333333333333333333333333333333333333333333333333</open-checksum>
    <location href="repodata/y-primary.xml.zst"/>
  </data>
</repomd>"#;

    #[test]
    fn repomd_names_the_primary_file() {
        assert_eq!(
            primary_location(REPOMD).unwrap(),
            Location {
                href: "repodata/y-primary.xml.zst".into(),
                sha256: "2".repeat(64),
            }
        );
        let error = format!(
            "{:#}",
            primary_location(&REPOMD.replace("type=\"sha256\"", "type=\"sha1\"")).unwrap_err()
        );
        assert!(error.contains("sha1"), "{error}");
        assert!(primary_location("<repomd></repomd>").is_err());
        assert!(primary_location("<repomd><data type=\"primary\"").is_err());
    }

    fn package_xml(name: &str, arch: &str, ver: &str, rel: &str, sum: char) -> String {
        format!(
            r#"<package type="rpm"><name>{name}</name><arch>{arch}</arch>
  <version epoch="0" ver="{ver}" rel="{rel}"/>
  <checksum type="sha256" pkgid="YES">{}</checksum>
  <summary>The Linux kernel &amp; more</summary>
  <location href="Packages/k/{name}-{ver}-{rel}.{arch}.rpm"/>
  <format><rpm:provides><rpm:entry name="kernel-core-uname-r"/></rpm:provides>
  <rpm:requires><rpm:entry name="kernel-modules-core"/></rpm:requires></format>
</package>"#,
            sum.to_string().repeat(64)
        )
    }

    #[test]
    fn primary_lists_the_named_packages_of_the_arch() {
        let primary = format!(
            "<?xml version=\"1.0\"?><metadata xmlns=\"http://linux.duke.edu/metadata/common\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" packages=\"4\">{}{}{}{}</metadata>",
            package_xml("kernel-core", "x86_64", "6.17.1", "300.fc43", 'a'),
            package_xml("kernel-core", "aarch64", "6.17.1", "300.fc43", 'b'),
            package_xml("kernel", "x86_64", "6.17.1", "300.fc43", 'c'),
            package_xml("kernel-modules-core", "x86_64", "6.17.1", "300.fc43", 'd'),
        );
        let names = ["kernel-core".to_owned(), "kernel-modules-core".to_owned()];
        let found = packages(&primary, &names, "x86_64").unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].name, "kernel-core");
        assert_eq!(found[0].evr(), "6.17.1-300.fc43");
        assert_eq!(found[0].file.sha256, "a".repeat(64));
        assert_eq!(
            found[0].file.href,
            "Packages/k/kernel-core-6.17.1-300.fc43.x86_64.rpm"
        );
        assert!(found[0].same_build(&found[1]));
        assert!(packages("<metadata><package><name>", &names, "x86_64").is_err());
    }
}
