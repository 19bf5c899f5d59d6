//! The template pool: runtimes started ahead, each in its own sandbox,
//! waiting to be given a function, so that a cold start specialises one
//! instead of building a sandbox and starting an interpreter on the request
//! path. Owns how deep each family's pool is and when it is refilled or
//! trimmed; it must not decide admission (the pool in `pool.rs` does) or
//! know what a template holds (`env.rs` builds and specialises them).
//!
//! A family's depth follows its cold starts: at least `--prewarm`, and as
//! many as cold starts drew in the busiest second of the last minute (up to
//! `--prewarm-max`), so a burst like the last one finds its templates made.
//! Up to one build per core runs at a time for a family; a minute after its
//! last busy second, templates above the new depth are retired.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::env;

/// How long a busy second keeps the pool deep.
const WINDOW: Duration = Duration::from_secs(60);
/// How often templates above their family's depth are looked for.
const TRIM_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct Templates {
    families: Mutex<HashMap<String, Family>>,
    /// `--prewarm`: the depth with no cold starts (0: no templates at all).
    floor: usize,
    /// `--prewarm-max`: the deepest a burst of cold starts makes a pool.
    ceiling: usize,
    /// Builds in flight per family at most.
    builders: usize,
    started: Instant,
    /// Set at shutdown: a template finished after it is retired at once.
    closed: AtomicBool,
    closing: tokio::sync::Notify,
    /// The build tasks and the trimmer, which shutdown waits for (a template
    /// half made has mounts).
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// One family's templates and the cold starts that drew from it.
#[derive(Default)]
struct Family {
    ready: Vec<env::Env>,
    /// Templates being built.
    building: usize,
    /// Build tasks running (each builds one template after another).
    builders: usize,
    /// Cold starts per second (seconds since the pool started), the last minute's.
    draws: VecDeque<(u64, usize)>,
    /// An image no longer kept (see [`Templates::take_images`]): its
    /// builders stop and it is not refilled (a cold start of the old image
    /// still running must not start it again), until a function of it is
    /// prepared again ([`Templates::ensure`]). Kept, empty, for builders
    /// still running: an entry per image a node has had.
    retired: bool,
}

impl Family {
    fn draw(&mut self, second: u64) {
        match self.draws.back_mut() {
            Some((s, n)) if *s == second => *n += 1,
            _ => self.draws.push_back((second, 1)),
        }
        self.forget(second);
    }

    fn forget(&mut self, second: u64) {
        while self.draws.front().is_some_and(|(s, _)| s + WINDOW.as_secs() <= second) {
            self.draws.pop_front();
        }
    }

    /// The busiest second's cold starts in the last minute, within bounds.
    fn depth(&mut self, second: u64, floor: usize, ceiling: usize) -> usize {
        self.forget(second);
        let busiest = self.draws.iter().map(|(_, n)| *n).max().unwrap_or(0);
        busiest.clamp(floor, ceiling.max(floor))
    }
}

impl Templates {
    pub(crate) fn new(floor: usize, ceiling: usize) -> Arc<Self> {
        let me = Arc::new(Self {
            families: Default::default(),
            floor,
            ceiling,
            builders: std::thread::available_parallelism().map_or(1, |n| n.get()),
            started: Instant::now(),
            closed: Default::default(),
            closing: Default::default(),
            tasks: Default::default(),
        });
        if floor > 0 {
            let trimmer = tokio::spawn(me.clone().trim());
            me.lock_tasks().push(trimmer);
        }
        me
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Family>> {
        self.families.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_tasks(&self) -> MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Ready templates per family.
    pub(crate) fn counts(&self) -> Vec<(String, u32)> {
        let mut counts: Vec<(String, u32)> = self
            .lock()
            .iter()
            .filter(|(_, family)| !family.retired)
            .map(|(f, family)| (f.clone(), family.ready.len() as u32))
            .collect();
        counts.sort();
        counts
    }

    /// Whether the runtime has templates: it must start ahead, and be one
    /// this node can run (an image's root is one, in a sandbox).
    fn applies(base: &env::Base) -> bool {
        let managed = ["python", "nodejs"].iter().any(|p| base.runtime.starts_with(p)) && base.interpreter.is_some();
        base.starts_ahead() && (managed || base.custom() || (base.image.is_some() && base.sandbox.is_some()))
    }

    /// Templates are kept per interpreter (a sandboxed Node.js one without
    /// its SDK at the root apart, and with its ES module hooks apart again);
    /// every `provided*` shares one kind, and each image root is its own.
    fn family(base: &env::Base) -> String {
        match (&base.image, base.custom()) {
            (Some(root), _) => format!("image:{}", root.path().display()),
            (None, true) => "provided".into(),
            (None, false) if base.esm_hooks => format!("{}+esm", base.runtime),
            (None, false) if base.runtime.starts_with("nodejs") && base.sandbox.is_some() && base.links.is_empty() => {
                format!("{}+layers", base.runtime)
            }
            (None, false) => base.runtime.clone(),
        }
    }

    /// A ready template of the runtime, if there is one; counts the cold
    /// start towards the family's depth. Builds at once only when none is
    /// left: otherwise the cold start's [`RefillAfter`] refills once it is
    /// answered, because a sandbox built meanwhile takes the second core
    /// from the runtime starting in the template just taken.
    pub(crate) fn take(self: &Arc<Self>, base: &env::Base) -> Option<env::Env> {
        if self.floor == 0 || !Self::applies(base) {
            return None;
        }
        let second = self.second();
        let (found, dead, left) = {
            let mut families = self.lock();
            let family = families.entry(Self::family(base)).or_default();
            family.draw(second);
            let mut dead = Vec::new();
            let mut found = None;
            while let Some(t) = family.ready.pop() {
                if t.alive() {
                    found = Some(t);
                    break;
                }
                dead.push(t);
            }
            (found, dead, family.ready.len())
        };
        if !dead.is_empty() {
            tokio::spawn(retire_all(dead));
        }
        if left == 0 {
            self.fill(base);
        }
        found
    }

    /// Makes sure a template of `base` is ready before returning (an image
    /// function is Active once a sandbox waits on its root), then fills.
    pub(crate) async fn ensure(self: &Arc<Self>, base: &env::Base) {
        let name = Self::family(base);
        let build = {
            let mut families = self.lock();
            let family = families.entry(name.clone()).or_default();
            family.retired = false;
            let build = family.ready.is_empty() && self.floor > 0 && Self::applies(base);
            family.building += usize::from(build);
            build
        };
        if build {
            self.settle(&name, env::Env::launch(base, None).await).await;
        }
        self.fill(base);
    }

    /// Ends a build counted in its family's `building`: the template joins
    /// the ready list, or is retired once the pool closed or the family
    /// retired; a failure is logged. Says whether the template was kept.
    async fn settle(&self, name: &str, made: Result<env::Env, crate::Error>) -> bool {
        let late = {
            // Checked under the lock `close` closes with: nothing slips in after it.
            let mut families = self.lock();
            let family = families.entry(name.to_string()).or_default();
            family.building -= 1;
            match made {
                Ok(t) if !self.closed.load(Ordering::SeqCst) && !family.retired => {
                    family.ready.push(t);
                    return true;
                }
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(family = %name, error = %e, "cannot start a template");
                    return false;
                }
            }
        };
        late.retire().await;
        false
    }

    /// Starts builders for the family until its ready and building
    /// templates reach its depth, one per core at most.
    pub(crate) fn fill(self: &Arc<Self>, base: &env::Base) {
        if self.floor == 0 || !Self::applies(base) {
            return;
        }
        let name = Self::family(base);
        let second = self.second();
        // Held first: a `close` after the decision below still finds the builders' handles.
        let mut tasks = self.lock_tasks();
        let start = {
            let mut families = self.lock();
            let family = families.entry(name.clone()).or_default();
            if self.closed.load(Ordering::SeqCst) || family.retired {
                return;
            }
            let missing =
                family.depth(second, self.floor, self.ceiling).saturating_sub(family.ready.len() + family.building);
            let start = missing.min(self.builders.saturating_sub(family.builders));
            family.builders += start;
            start
        };
        tasks.retain(|t| !t.is_finished());
        for _ in 0..start {
            tasks.push(tokio::spawn(self.clone().build(name.clone(), base.clone())));
        }
    }

    /// One builder: builds templates one after another while the family
    /// has fewer ready and building than its depth.
    async fn build(self: Arc<Self>, name: String, base: env::Base) {
        loop {
            {
                let mut families = self.lock();
                let second = self.second();
                let family = families.entry(name.clone()).or_default();
                let depth = family.depth(second, self.floor, self.ceiling);
                if self.closed.load(Ordering::SeqCst) || family.retired || family.ready.len() + family.building >= depth
                {
                    family.builders -= 1;
                    return;
                }
                family.building += 1;
            }
            if !self.settle(&name, env::Env::launch(&base, None).await).await {
                self.lock().entry(name.clone()).or_default().builders -= 1;
                return;
            }
        }
    }

    /// Retires, every few seconds, the templates above each family's depth.
    async fn trim(self: Arc<Self>) {
        loop {
            let closing = self.closing.notified();
            tokio::pin!(closing);
            // Listening before the flag is read: a close between the two still wakes it.
            closing.as_mut().enable();
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            tokio::select! {
                _ = closing => return,
                _ = tokio::time::sleep(TRIM_EVERY) => {}
            }
            let second = self.second();
            let surplus: Vec<env::Env> = {
                let mut families = self.lock();
                families
                    .values_mut()
                    .flat_map(|f| {
                        let depth = f.depth(second, self.floor, self.ceiling);
                        f.ready.split_off(depth.min(f.ready.len()))
                    })
                    .collect()
            };
            retire_all(surplus).await;
        }
    }

    /// Hands back the templates of every image whose manifest digest is
    /// not in `keep` (an image root is named by its digest's hex), and
    /// stops their builders. The families stay, for builders still running.
    pub(crate) fn take_images(&self, keep: &HashSet<String>) -> Vec<env::Env> {
        let unkept = |family: &str| {
            family.strip_prefix("image:").is_some_and(|root| {
                let hex = std::path::Path::new(root).file_name().unwrap_or_default().to_string_lossy();
                !keep.contains(&format!("sha256:{hex}"))
            })
        };
        let mut families = self.lock();
        families
            .iter_mut()
            .filter(|(name, _)| unkept(name))
            .flat_map(|(_, family)| {
                family.retired = true;
                std::mem::take(&mut family.ready)
            })
            .collect()
    }

    /// Stops building and trimming, waits for builds under way, and hands
    /// back every template.
    pub(crate) async fn close(&self) -> Vec<env::Env> {
        {
            let _families = self.lock();
            self.closed.store(true, Ordering::SeqCst);
        }
        self.closing.notify_waiters();
        let tasks = std::mem::take(&mut *self.lock_tasks());
        for task in tasks {
            let _ = task.await;
        }
        // The families stay: an `ensure` still under way settles its build into one.
        self.lock().values_mut().flat_map(|f| std::mem::take(&mut f.ready)).collect()
    }
}

/// Refills the templates of a cold start's runtime when dropped: once the
/// cold start is answered, or has failed (see [`Templates::take`]).
pub(crate) struct RefillAfter<'a> {
    pub templates: &'a Arc<Templates>,
    pub base: env::Base,
}

impl Drop for RefillAfter<'_> {
    fn drop(&mut self) {
        self.templates.fill(&self.base);
    }
}

/// Environments retired at once by [`retire_all`].
const RETIRING_AT_ONCE: usize = 64;

/// Retires environments, many at a time: a retirement mostly waits (for
/// its runtime to exit, for its cgroup to empty), and one after another a
/// function's 500 idle environments took 6 s, which its DeleteFunction
/// waited for (BENCHMARKS.md, session 21).
pub(crate) async fn retire_all(envs: Vec<env::Env>) {
    use futures_util::StreamExt;
    futures_util::stream::iter(envs.into_iter().map(env::Env::retire))
        .buffer_unordered(RETIRING_AT_ONCE)
        .for_each(|()| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_depth_follows_the_busiest_second_of_the_last_minute() {
        let mut f = Family::default();
        assert_eq!(f.depth(0, 2, 32), 2, "no cold starts: the floor");
        for _ in 0..10 {
            f.draw(5);
        }
        f.draw(6);
        assert_eq!(f.depth(6, 2, 32), 10);
        assert_eq!(f.depth(64, 2, 32), 10, "a minute after second 5, it still counts");
        assert_eq!(f.depth(65, 2, 32), 2, "and then no longer");
        for _ in 0..100 {
            f.draw(70);
        }
        assert_eq!(f.depth(70, 2, 32), 32, "never above the ceiling");
        assert_eq!(f.depth(70, 4, 1), 4, "nor below the floor");
    }
}
