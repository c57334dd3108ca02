//! Target specs: which engines a console command addresses (`all`, `0,2`,
//! `0-3`, or a mix such as `0-3,6`).

use std::fmt;
use std::str::FromStr;
use zpar_client::Targets;

/// The most ids one spec may name (a guard against `0-4000000000`).
const MAX_IDS: usize = 100_000;

/// Which engines: every registered one, or these ids in this order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TargetSpec {
    /// Every engine registered when the command runs.
    #[default]
    All,
    /// These engines.
    Ids(Vec<u32>),
}

impl TargetSpec {
    /// Parses `all`, `*`, `0,2`, `0-3`, `[0, 2]` or a mix like `0-3,6`.
    ///
    /// ```
    /// use zpar::console::TargetSpec;
    /// assert_eq!("0-2,5".parse::<TargetSpec>().unwrap(), TargetSpec::Ids(vec![0, 1, 2, 5]));
    /// assert_eq!("all".parse::<TargetSpec>().unwrap(), TargetSpec::All);
    /// ```
    pub fn parse(text: &str) -> Result<TargetSpec, String> {
        let s = text.trim();
        let s = s
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(s)
            .trim();
        if s.is_empty() {
            return Err("no targets given: use `all`, ids like `0,2` or a range like `0-3`".into());
        }
        if s.eq_ignore_ascii_case("all") || s == "*" {
            return Ok(TargetSpec::All);
        }
        let mut ids: Vec<u32> = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!("empty item in target list {text:?}"));
            }
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (id(a, text)?, id(b, text)?),
                None => {
                    let i = id(part, text)?;
                    (i, i)
                }
            };
            if lo > hi {
                return Err(format!("range {part} runs backwards (write {hi}-{lo})"));
            }
            if ids.len() + (hi - lo) as usize >= MAX_IDS {
                return Err(format!("{text:?} names more than {MAX_IDS} engines"));
            }
            for i in lo..=hi {
                if !ids.contains(&i) {
                    ids.push(i);
                }
            }
        }
        Ok(TargetSpec::Ids(ids))
    }

    /// The client's form of these targets.
    pub fn to_targets(&self) -> Targets {
        match self {
            TargetSpec::All => Targets::All,
            TargetSpec::Ids(ids) => Targets::List(ids.clone()),
        }
    }
}

fn id(s: &str, whole: &str) -> Result<u32, String> {
    s.trim().parse::<u32>().map_err(|_| {
        format!(
            "{:?} in {whole:?} is not an engine id (ids are whole numbers from 0)",
            s.trim()
        )
    })
}

impl FromStr for TargetSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<TargetSpec, String> {
        TargetSpec::parse(s)
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::All => write!(f, "all"),
            TargetSpec::Ids(ids) => write!(f, "{}", compact(ids)),
        }
    }
}

/// Ids written short: runs of three or more consecutive ids as `a-b`.
///
/// ```
/// assert_eq!(zpar::console::targets::compact(&[0, 1, 2, 3, 5, 7, 8]), "0-3,5,7,8");
/// ```
pub fn compact(ids: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j].wrapping_add(1) {
            j += 1;
        }
        if j - i >= 2 {
            parts.push(format!("{}-{}", ids[i], ids[j]));
        } else {
            parts.extend(ids[i..=j].iter().map(u32::to_string));
        }
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_ranges_and_all() {
        assert_eq!(TargetSpec::parse("all").unwrap(), TargetSpec::All);
        assert_eq!(TargetSpec::parse(" ALL ").unwrap(), TargetSpec::All);
        assert_eq!(TargetSpec::parse("*").unwrap(), TargetSpec::All);
        assert_eq!(TargetSpec::parse("3").unwrap(), TargetSpec::Ids(vec![3]));
        assert_eq!(
            TargetSpec::parse("0,2").unwrap(),
            TargetSpec::Ids(vec![0, 2])
        );
        assert_eq!(
            TargetSpec::parse("0-3").unwrap(),
            TargetSpec::Ids(vec![0, 1, 2, 3])
        );
        assert_eq!(
            TargetSpec::parse("[5, 0-1, 5]").unwrap(),
            TargetSpec::Ids(vec![5, 0, 1]),
            "order kept, duplicates dropped"
        );
    }

    #[test]
    fn rejects_what_is_not_a_spec() {
        for bad in ["", "x", "1,", "3-1", "-1", "1-", "0-99999999", "1.5"] {
            let e = TargetSpec::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad:?}");
        }
        assert!(TargetSpec::parse("3-1").unwrap_err().contains("backwards"));
    }

    #[test]
    fn displays_compactly_and_round_trips() {
        for s in ["all", "0-3", "0,2", "0-2,5,7,8"] {
            assert_eq!(TargetSpec::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(compact(&[]), "");
        assert_eq!(compact(&[4, 5]), "4,5");
    }
}
