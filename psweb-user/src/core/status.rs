//! The status-class rule of an HTTP(S) stall check: with `status_classes` set, an
//! answer whose status is outside them counts as a failed probe.

/// Whether a probe's answer passes: `status` is the HTTP status code (None for a TCP
/// check), `classes` the required classes (2 for 2xx, ...; None: any status passes).
/// Err carries the reason the probe counts as failed.
pub fn status_verdict(status: Option<u16>, classes: Option<&[u8]>) -> Result<(), String> {
    match (status, classes) {
        (Some(code), Some(cls)) if !cls.contains(&u8::try_from(code / 100).unwrap_or(0)) => {
            Err(format!(
                "status {code} is not in the required classes {}",
                cls.iter()
                    .map(|c| format!("{c}xx"))
                    .collect::<Vec<_>>()
                    .join(",")
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::status_verdict;

    /// (status, required classes, verdict)
    type Case<'a> = (Option<u16>, Option<&'a [u8]>, Result<(), &'a str>);

    #[test]
    fn status_class_table() {
        let two_three: &[u8] = &[2, 3];
        let two: &[u8] = &[2];
        let cases: &[Case] = &[
            (Some(200), None, Ok(())),
            (Some(500), None, Ok(())),
            (None, Some(two), Ok(())),
            (Some(200), Some(two), Ok(())),
            (Some(204), Some(two_three), Ok(())),
            (Some(302), Some(two_three), Ok(())),
            (
                Some(404),
                Some(two_three),
                Err("status 404 is not in the required classes 2xx,3xx"),
            ),
            (
                Some(503),
                Some(two),
                Err("status 503 is not in the required classes 2xx"),
            ),
            (
                Some(101),
                Some(two),
                Err("status 101 is not in the required classes 2xx"),
            ),
        ];
        for (status, classes, want) in cases {
            let got = status_verdict(*status, *classes);
            assert_eq!(got, want.map_err(String::from), "{status:?} {classes:?}");
        }
    }
}
