//! Choosing an engine for a load-balanced task.

use super::registry::Registry;

/// How the hub picks an engine for a load-balanced task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// The engine with the fewest outstanding requests (ties: least
    /// recently used).
    #[default]
    LeastLoad,
    /// The least recently used engine.
    Lru,
    /// Any engine, at random.
    Random,
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scheme::LeastLoad => "leastload",
            Scheme::Lru => "lru",
            Scheme::Random => "random",
        })
    }
}

impl std::str::FromStr for Scheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Scheme, String> {
        match s {
            "leastload" | "least-load" | "least_load" => Ok(Scheme::LeastLoad),
            "lru" => Ok(Scheme::Lru),
            "random" => Ok(Scheme::Random),
            other => Err(format!(
                "unknown scheme {other:?}: use leastload, lru or random"
            )),
        }
    }
}

/// Picks engines by a [`Scheme`].
#[derive(Debug)]
pub struct Scheduler {
    scheme: Scheme,
    clock: u64,
    rng: fastrand::Rng,
}

impl Scheduler {
    /// A scheduler for `scheme`, seeded from the system.
    pub fn new(scheme: Scheme) -> Scheduler {
        Scheduler::with_rng(scheme, fastrand::Rng::new())
    }

    /// A scheduler whose random choices follow `seed` (for tests).
    pub fn seeded(scheme: Scheme, seed: u64) -> Scheduler {
        Scheduler::with_rng(scheme, fastrand::Rng::with_seed(seed))
    }

    fn with_rng(scheme: Scheme, rng: fastrand::Rng) -> Scheduler {
        Scheduler {
            scheme,
            clock: 0,
            rng,
        }
    }

    /// Picks one of `allowed` (all engines when None) and marks it used.
    /// Among all engines, least-load and LRU take the first of the
    /// registry's orders (no walk over the engines); among `allowed`, the
    /// walk is over those only.
    pub fn pick(&mut self, registry: &mut Registry, allowed: Option<&[u32]>) -> Option<u32> {
        let chosen = match allowed {
            None => match self.scheme {
                Scheme::LeastLoad => registry.least_loaded()?,
                Scheme::Lru => registry.least_recent()?,
                Scheme::Random => {
                    let ids = registry.ids();
                    *ids.get(self.rng.usize(..ids.len().max(1)))?
                }
            },
            Some(allowed) => {
                let candidates = allowed.iter().filter_map(|id| registry.get(*id));
                match self.scheme {
                    Scheme::LeastLoad => {
                        candidates.min_by_key(|e| (e.pending().len(), e.last_assigned(), e.id))?
                    }
                    Scheme::Lru => candidates.min_by_key(|e| (e.last_assigned(), e.id))?,
                    Scheme::Random => {
                        let candidates: Vec<_> = candidates.collect();
                        *candidates.get(self.rng.usize(..candidates.len().max(1)))?
                    }
                }
                .id
            }
        };
        self.clock += 1;
        registry.mark_assigned(chosen, self.clock);
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::registry::Pending;
    use zpar_protocol::Channel;

    fn registry(n: usize) -> Registry {
        let mut r = Registry::default();
        for i in 0..n {
            r.register(format!("e{i}").as_bytes(), None);
        }
        r
    }

    #[test]
    fn least_load_prefers_idle_engines() {
        let mut r = registry(3);
        r.add_pending(
            0,
            "m".into(),
            Pending::new(
                vec![],
                zpar_protocol::Header::new("apply_request", "s", "u"),
                Channel::Task,
                0.0,
            ),
        );
        let mut s = Scheduler::new(Scheme::LeastLoad);
        let a = s.pick(&mut r, None).unwrap();
        let b = s.pick(&mut r, None).unwrap();
        assert_ne!(a, 0);
        assert_ne!(b, 0);
        assert_ne!(a, b, "ties go to the least recently used");
    }

    #[test]
    fn lru_cycles_and_subsets_are_respected() {
        let mut r = registry(3);
        let mut s = Scheduler::new(Scheme::Lru);
        let picks: Vec<u32> = (0..6).map(|_| s.pick(&mut r, None).unwrap()).collect();
        assert_eq!(&picks[..3], &picks[3..]);
        for _ in 0..10 {
            assert_eq!(s.pick(&mut r, Some(&[2])), Some(2));
        }
        assert_eq!(s.pick(&mut r, Some(&[9])), None);
        let mut rnd = Scheduler::new(Scheme::Random);
        for _ in 0..20 {
            assert!(rnd.pick(&mut r, Some(&[0, 1])).unwrap() < 2);
        }
    }

    #[test]
    fn parses_names() {
        assert_eq!("lru".parse::<Scheme>().unwrap(), Scheme::Lru);
        assert!("fastest".parse::<Scheme>().is_err());
    }
}
