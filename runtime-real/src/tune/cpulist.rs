//! The kernel's CPU list format (`0-3,8,10-11`): parsing and printing, used by
//! `/sys/devices/system/cpu/online`, `smp_affinity_list`, `cpuset.cpus` and `--cores`.

/// A CPU list that does not parse.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("`{text}` is not a CPU list like 0-3,8")]
pub struct CpuListError {
    /// The text.
    pub text: String,
}

/// Largest CPU number accepted (the kernel's default `CPU_SETSIZE`).
pub const MAX_CPU: usize = 1023;

/// Parses `0-3,8` into sorted, distinct CPU numbers. An empty text is an empty list.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, CpuListError> {
    let error = || CpuListError {
        text: text.to_string(),
    };
    let mut cpus = Vec::new();
    for part in text.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let first: usize = first.parse().map_err(|_| error())?;
        let last: usize = last.parse().map_err(|_| error())?;
        if first > last || last > MAX_CPU {
            return Err(error());
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Prints CPU numbers as `0-3,8` (ranges merged; input need not be sorted).
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(format_cpu_list(&[11, 0, 1, 2, 3, 8, 10]), "0-3,8,10-11");
        assert_eq!(parse_cpu_list("").unwrap(), Vec::<usize>::new());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
        assert!(parse_cpu_list("0-5000").is_err());
    }
}
