//! The registry of targets: every measured process and the service it is labelled with.
//! It is the one list of targets; pairing (a connection's service) and the saturation
//! collector read it.
//!
//! It changes with what happens to processes, in the order the kernel reports it (one ring
//! buffer carries forks, execs and exits in order), so a service follows the process:
//! - a process given or selected takes `--service`, or its pod's workload, or its own
//!   command name, with the labels of the container and pod it runs in (`labels::service`);
//! - a child takes its parent's service at its fork, so the name survives its ancestors
//!   (a double-forking daemon keeps the name of the process it was started as);
//! - a process that executes a new program takes the new program's name, unless
//!   `--service` or its pod names it (`sh -c 'exec gunicorn ...'` becomes `gunicorn`); children forked
//!   afterwards inherit that name.
//!
//! The kernel's bitmap of targets is not kept here: the kernel sets and clears a process's
//! bit itself at its fork and exit, and the agent only sets the bits of the processes it
//! selects (`bin/redprobe/targets.rs`).
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use crate::{
    labels::{Placement, PlacementLabels, Service, UNKNOWN_SERVICE},
    proc_root::ProcInfo,
};

/// One measured process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub pid: u32,
    /// Clock ticks since boot, as /proc/PID/stat counts them (with the PID, the identity of
    /// the process: a PID alone may be reused).
    pub start_time: u64,
    pub comm: String,
    /// Its container and pod, read once when it was attached (a fork or an exec does not
    /// leave a container).
    pub placement: Arc<Placement>,
    pub service: Service,
    /// The service's small id, which the kernel knows the process by (`SERVICES`); 0 when
    /// there are too many services (the process is then paired by the agent).
    pub service_id: u32,
    /// Given or selected itself (not a descendant of one): its waited-for children's CPU
    /// counts in its service's CPU.
    pub root: bool,
}

/// The registry, shared by the event loop (which changes it) and the scrape (which reads it).
pub type SharedRegistry = Arc<Mutex<Registry>>;

/// Locks the shared registry. A panic while it was held cannot leave it half-changed (every
/// change is one map operation), so a poisoned lock is used as it is.
pub fn lock(registry: &SharedRegistry) -> MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Service ids held at once at most: a bound on the kernel's aggregates and the label sets
/// a churn of process names or containers can make (a process of a service past it stays
/// on the agent's path, `no_service`). Ids of forgotten services are not given out again.
pub const MAX_SERVICES: u32 = 1024;

#[derive(Debug, Default)]
pub struct Registry {
    targets: HashMap<u32, Target>,
    /// `--service`: every target's service name, whatever its command.
    pinned: Option<String>,
    /// `--container-labels`.
    chosen: PlacementLabels,
    /// Id -> service, for the ids given out and not forgotten.
    services: HashMap<u32, Service>,
    /// Every service known and not forgotten, with its id (0: past [`MAX_SERVICES`]).
    ids: HashMap<Service, u32>,
    last_id: u32,
    /// Services left without a target, since when (as `forget` saw them).
    idle: HashMap<Service, std::time::Instant>,
}

impl Registry {
    pub fn new(pinned_service: Option<&str>) -> Self {
        Registry::with_labels(pinned_service, PlacementLabels::default())
    }

    /// `chosen`: the container and pod labels services carry (`--container-labels`).
    pub fn with_labels(pinned_service: Option<&str>, chosen: PlacementLabels) -> Self {
        Registry { pinned: pinned_service.map(str::to_string), chosen, ..Default::default() }
    }

    /// The id of a service (given out on first sight; 0 past [`MAX_SERVICES`]).
    fn id_of(&mut self, service: &Service) -> u32 {
        if let Some(id) = self.ids.get(service) {
            return *id;
        }
        let id = if self.services.len() as u32 >= MAX_SERVICES || self.last_id == u32::MAX {
            0
        } else {
            self.last_id += 1;
            self.services.insert(self.last_id, service.clone());
            self.last_id
        };
        self.ids.insert(service.clone(), id);
        id
    }

    /// The service of an id the kernel reported.
    pub fn service_named(&self, id: u32) -> Option<Service> {
        self.services.get(&id).cloned()
    }

    /// Is this service known (not forgotten)?
    pub fn knows(&self, service: &Service) -> bool {
        self.ids.contains_key(service)
    }

    /// Services that have had no target for `after` (their containers or processes went
    /// away), as of `now`: they are forgotten, and returned with their ids (0: none) so
    /// that their series and the kernel's aggregates can go too. A service that has
    /// targets again before then is kept. Called now and then (`now` moves forward).
    pub fn forget_idle(&mut self, now: std::time::Instant, after: std::time::Duration) -> Vec<(u32, Service)> {
        let live: std::collections::HashSet<&Service> = self.targets.values().map(|t| &t.service).collect();
        self.idle.retain(|s, _| !live.contains(s));
        for s in self.ids.keys().filter(|s| !live.contains(s)) {
            self.idle.entry(s.clone()).or_insert(now);
        }
        let gone: Vec<Service> = self
            .idle
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= after)
            .map(|(s, _)| s.clone())
            .collect();
        let mut out = vec![];
        for s in gone {
            self.idle.remove(&s);
            let id = self.ids.remove(&s).unwrap_or(0);
            self.services.remove(&id);
            out.push((id, s));
        }
        out
    }

    pub fn shared(self) -> SharedRegistry {
        Arc::new(Mutex::new(self))
    }

    fn named(&self, comm: &str, placement: &Placement) -> Service {
        Service::of(self.pinned.as_deref(), placement, comm, self.chosen)
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn get(&self, pid: u32) -> Option<&Target> {
        self.targets.get(&pid)
    }

    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.values()
    }

    /// Is this very process (PID and start time) a target?
    pub fn contains(&self, pid: u32, start_time: u64) -> bool {
        self.get(pid).is_some_and(|t| t.start_time == start_time)
    }

    /// The service of a process's I/O.
    pub fn service_of(&self, pid: u32) -> Service {
        match self.targets.get(&pid) {
            Some(t) => t.service.clone(),
            None => Service::named(self.pinned.as_deref().unwrap_or(UNKNOWN_SERVICE)),
        }
    }

    fn insert(&mut self, mut t: Target) -> Option<&Target> {
        if self.contains(t.pid, t.start_time) {
            return None;
        }
        t.service_id = self.id_of(&t.service);
        let pid = t.pid;
        self.targets.insert(pid, t);
        self.targets.get(&pid)
    }

    /// A process given or selected, running in `placement`: its service is `--service`,
    /// its pod's workload or its own name. `None` if it is a target already.
    pub fn attach_root(&mut self, p: &ProcInfo, placement: Placement) -> Option<&Target> {
        let service = self.named(&p.comm, &placement);
        let placement = Arc::new(placement);
        let (pid, start_time, comm) = (p.pid, p.start_time, p.comm.clone());
        self.insert(Target { pid, start_time, comm, placement, service, service_id: 0, root: true })
    }

    /// A descendant of a root, found in /proc when the root was attached: the root's
    /// placement and service.
    pub fn attach_descendant(&mut self, p: &ProcInfo, root: &Target) -> Option<&Target> {
        let (placement, service) = (root.placement.clone(), root.service.clone());
        let (pid, start_time, comm) = (p.pid, p.start_time, p.comm.clone());
        self.insert(Target { pid, start_time, comm, placement, service, service_id: 0, root: false })
    }

    /// A target forked `child` (the kernel made it a target): it takes its parent's name
    /// and service. `None` if the child is known already (a selector found it first).
    pub fn forked(&mut self, parent: u32, child: u32, start_time: u64) -> Option<&Target> {
        let (comm, placement, service) = match self.targets.get(&parent) {
            Some(p) => (p.comm.clone(), p.placement.clone(), p.service.clone()),
            None => (String::new(), Arc::default(), self.service_of(parent)),
        };
        self.insert(Target { pid: child, start_time, comm, placement, service, service_id: 0, root: false })
    }

    /// A target executed a new program called `comm`: it takes that name as its service,
    /// unless `--service` pins it. Returns the target as it is now.
    pub fn execed(&mut self, pid: u32, comm: &str) -> Option<&Target> {
        let service = self.named(comm, &self.targets.get(&pid)?.placement.clone());
        let id = self.id_of(&service);
        let t = self.targets.get_mut(&pid)?;
        t.comm = comm.to_string();
        t.service = service;
        t.service_id = id;
        Some(t)
    }

    /// A target exited.
    pub fn exited(&mut self, pid: u32) -> Option<Target> {
        self.targets.remove(&pid)
    }

    /// Forgets targets that `still_running` says are gone (an exit whose event was lost).
    pub fn retain_running(&mut self, mut still_running: impl FnMut(&Target) -> bool) -> Vec<Target> {
        let gone: Vec<u32> = self.targets.values().filter(|t| !still_running(t)).map(|t| t.pid).collect();
        gone.into_iter().filter_map(|pid| self.targets.remove(&pid)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, comm: &str) -> ProcInfo {
        ProcInfo { pid, ppid: 1, start_time: 1000 + pid as u64, comm: comm.into() }
    }

    #[test]
    fn children_inherit_and_keep_the_name_after_their_ancestors_exit() {
        let mut r = Registry::new(None);
        r.attach_root(&proc(10, "daemon"), Placement::default()).unwrap();
        r.forked(10, 11, 2000).unwrap();
        r.exited(10);
        r.forked(11, 12, 2001).unwrap();
        r.exited(11);
        assert_eq!(r.service_of(12).name(), "daemon");
        assert_eq!(r.len(), 1);
        assert!(r.contains(12, 2001));
    }

    #[test]
    fn exec_renames_the_process_and_its_later_children() {
        let mut r = Registry::new(None);
        r.attach_root(&proc(20, "sh"), Placement::default()).unwrap();
        r.forked(20, 21, 3000).unwrap(); // before the exec: stays "sh"
        r.execed(20, "gunicorn").unwrap();
        r.forked(20, 22, 3001).unwrap();
        assert_eq!(r.service_of(20).name(), "gunicorn");
        assert_eq!(r.service_of(21).name(), "sh");
        assert_eq!(r.service_of(22).name(), "gunicorn");
        // Ids follow the names: one per service.
        let (sh, gunicorn) = (r.get(21).unwrap().service_id, r.get(22).unwrap().service_id);
        assert_eq!((sh, gunicorn, r.get(20).unwrap().service_id), (1, 2, 2));
        assert_eq!(r.service_named(2).as_ref().map(|s| s.name()), Some("gunicorn"));
        assert_eq!(r.service_named(3), None);
    }

    #[test]
    fn services_without_targets_are_forgotten_after_a_while_and_their_ids_not_reused() {
        use std::time::{Duration, Instant};
        let mut r = Registry::new(None);
        let t0 = Instant::now();
        let after = Duration::from_secs(300);
        r.attach_root(&proc(60, "a"), Placement::default()).unwrap();
        r.attach_root(&proc(61, "b"), Placement::default()).unwrap();
        assert!(r.forget_idle(t0, after).is_empty());
        r.exited(60);
        assert!(r.forget_idle(t0 + Duration::from_secs(1), after).is_empty(), "idle from now on");
        assert!(r.forget_idle(t0 + Duration::from_secs(300), after).is_empty(), "not idle long enough");
        let gone = r.forget_idle(t0 + Duration::from_secs(301), after);
        assert_eq!(gone, vec![(1, Service::named("a"))]);
        assert!(!r.knows(&Service::named("a")) && r.knows(&Service::named("b")));
        assert_eq!(r.service_named(1), None);
        // Back after being forgotten: a new id.
        r.attach_root(&proc(62, "a"), Placement::default()).unwrap();
        assert_eq!(r.get(62).unwrap().service_id, 3);
        // A service that gets a target again while idle is kept.
        r.exited(61);
        assert!(r.forget_idle(t0 + Duration::from_secs(400), after).is_empty());
        r.attach_root(&proc(63, "b"), Placement::default()).unwrap();
        assert!(r.forget_idle(t0 + Duration::from_secs(1000), after).is_empty());
        assert!(r.knows(&Service::named("b")));
    }

    #[test]
    fn a_pinned_service_survives_exec_and_unknown_processes_get_one_name() {
        let mut r = Registry::new(Some("shop"));
        r.attach_root(&proc(30, "sh"), Placement::default()).unwrap();
        r.execed(30, "gunicorn").unwrap();
        assert_eq!(r.service_of(30).name(), "shop");
        assert_eq!(r.service_of(99).name(), "shop");
        let r = Registry::new(None);
        assert_eq!(r.service_of(99).name(), UNKNOWN_SERVICE);
    }

    #[test]
    fn a_process_is_attached_once_and_a_reused_pid_is_another_process() {
        let mut r = Registry::new(None);
        assert!(r.attach_root(&proc(40, "srv"), Placement::default()).is_some());
        assert!(r.attach_root(&proc(40, "srv"), Placement::default()).is_none());
        assert!(r.forked(1, 40, 1040).is_none(), "a selector found the child first");
        let reused = ProcInfo { start_time: 9999, ..proc(40, "other") };
        assert!(!r.contains(40, 9999));
        assert!(r.attach_root(&reused, Placement::default()).is_some());
        assert_eq!(r.get(40).unwrap().comm, "other");
    }

    #[test]
    fn lost_exits_are_reconciled() {
        let mut r = Registry::new(None);
        r.attach_root(&proc(50, "a"), Placement::default()).unwrap();
        r.attach_root(&proc(51, "b"), Placement::default()).unwrap();
        let gone = r.retain_running(|t| t.pid == 51);
        assert_eq!(gone.iter().map(|t| t.pid).collect::<Vec<_>>(), [50]);
        assert_eq!(r.len(), 1);
    }
}
