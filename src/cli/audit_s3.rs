//! `warden audit verify s3://BUCKET/PREFIX`: an S3 archive of signed journal segments,
//! verified object by object (docs/export.md, "S3 archive"). Credentials come from the usual
//! `AWS_*` environment variables.

use std::process::ExitCode;

use warden::adapters::export::s3::{verify_archive, ArchiveReport};
use warden::supervisor::journal::seal::PublicKey;

/// Is `target` (what `audit verify` was given) an S3 location rather than a data directory?
pub fn is_s3(target: &std::path::Path) -> bool {
    target.to_str().is_some_and(|t| t.starts_with("s3://"))
}

/// Verifies the archive at `url` and prints what was found: exit 0 when it is intact, 1
/// naming every bad object with why.
///
/// # Errors
/// A bad location, no credentials, or the archive could not be listed.
pub fn verify(
    url: &str,
    endpoint: Option<&str>,
    region: Option<&str>,
    keys: &[PublicKey],
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime
        .block_on(verify_archive(url, endpoint, region, keys))
        .map_err(anyhow::Error::msg)?;
    print!("{}", render(&report));
    Ok(if report.intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The report as printed: a verdict line, every bad object on a line of its own, then notes.
fn render(r: &ArchiveReport) -> String {
    let mut out = String::new();
    let signers: Vec<String> = r.signers.iter().map(ToString::to_string).collect();
    let range = r.range.map_or("no entries".to_string(), |(a, b)| {
        format!("entries {a}..={b}")
    });
    if r.intact() {
        out.push_str(&format!(
            "{}: OK: {} segments with their seals, {range}, signed by {}\n",
            r.url,
            r.segments,
            signers.join(", ")
        ));
    } else {
        let n = r.problems.len();
        let objects = if n == 1 { "object" } else { "objects" };
        out.push_str(&format!("{}: FAILED: {n} bad {objects}\n", r.url));
        for p in &r.problems {
            out.push_str(&format!("  {}: {}\n", p.key, p.reason));
        }
        out.push_str(&format!(
            "  ({} segments verified with their seals, {range})\n",
            r.segments
        ));
    }
    if r.self_attested && !signers.is_empty() {
        out.push_str(&format!(
            "warning: no --public-key given: each seal was checked against the key it names itself (self-attested: this proves the chain is whole, not who wrote it); keys seen: {}\n",
            signers.join(", ")
        ));
    }
    if !r.other.is_empty() {
        out.push_str(&format!(
            "note: {} objects under the prefix are neither segments nor seals and were not checked: {}\n",
            r.other.len(),
            r.other.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden::adapters::export::s3::Problem;

    #[test]
    fn a_failed_report_names_every_bad_object_on_its_own_line() {
        let r = ArchiveReport {
            url: "s3://b/p".into(),
            segments: 3,
            range: Some((1, 90)),
            problems: vec![
                Problem {
                    key: "p/00000000000000000031.seg".into(),
                    reason: "frame checksum mismatch".into(),
                },
                Problem {
                    key: "p/00000000000000000061.sig".into(),
                    reason: "its segment (.seg) is missing".into(),
                },
            ],
            self_attested: true,
            ..Default::default()
        };
        let text = render(&r);
        assert!(
            text.starts_with("s3://b/p: FAILED: 2 bad objects\n"),
            "{text}"
        );
        assert!(text.contains("\n  p/00000000000000000031.seg: frame checksum mismatch\n"));
        assert!(text.contains("\n  p/00000000000000000061.sig: its segment"));
    }
}
