//! Loading a pass's nft tables beside its other ops.
//!
//! Each namespace's nft ops go to the kernel as one atomic batch. A batch only needs its
//! namespace and the devices its netdev chains hook, and the kernel commits it under nf_tables'
//! own lock, not the RTNL. So [`schedule`] finds, for each namespace, the earliest op before
//! which its batch may start: after every namespace or link op of that namespace and every
//! deletion that comes before its first nft op. The pass starts the batch on a helper thread
//! there ([`run`]) and goes on with addresses, routes, neighbours and FDB entries meanwhile; it
//! waits for every running batch before a deletion and before it ends.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netlink_sys::protocols::NETLINK_NETFILTER;

use super::socket::{nl, Conn};
use super::{nft, nft_compile, nft_wire, NftLoader, Pass};
use crate::{Error, LinkKind, Netns, Op};

/// When each namespace's nft batch starts, and which ops it holds.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    /// For each op index, the namespaces whose nft batch starts just before that op.
    pub(crate) starts: BTreeMap<usize, Vec<Netns>>,
    /// The indexes of each namespace's nft ops, in order.
    pub(crate) ops_of: HashMap<Netns, Vec<usize>>,
}

/// The [`Schedule`] of `ops`, in one pass over them (a pass of a thousand routers holds tens of
/// thousands of ops and thousands of namespaces: nothing here may scan the ops once per
/// namespace).
pub(crate) fn schedule(ops: &[Op]) -> Schedule {
    let mut out = Schedule::default();
    // The index just past the last deletion, and past the last op preparing each namespace.
    let mut after_deletion = 0;
    let mut after_prepared: HashMap<Option<&str>, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if is_deletion(op) {
            after_deletion = i + 1;
        }
        for ns in prepared_by(op) {
            after_prepared.insert(ns, i + 1);
        }
        if let Op::ReplaceNft { key, .. } | Op::DelNft(key) = op {
            let mine = out.ops_of.entry(key.ns.clone()).or_default();
            if mine.is_empty() {
                let prepared = after_prepared.get(&ns_key(&key.ns)).copied().unwrap_or(0);
                let start = after_deletion.max(prepared);
                out.starts.entry(start).or_default().push(key.ns.clone());
            }
            mine.push(i);
        }
    }
    out
}

/// Whether `op` deletes something (every batch started before it must be done first).
pub(crate) fn is_deletion(op: &Op) -> bool {
    matches!(
        op,
        Op::DelNamespace { .. }
            | Op::DelLink { .. }
            | Op::DelAddr(_)
            | Op::DelRoute(_)
            | Op::DelRule(_)
            | Op::DelNeigh(_)
            | Op::DelFdb(_)
    )
}

/// A namespace by its name (`None`: the host), as [`prepared_by`] names them.
fn ns_key(ns: &Netns) -> Option<&str> {
    match ns {
        Netns::Host => None,
        Netns::Named(n) => Some(n),
    }
}

/// The namespaces `op` makes, or changes a device in (a veth: both ends' namespaces), by
/// [`ns_key`].
fn prepared_by(op: &Op) -> impl Iterator<Item = Option<&str>> {
    let (first, second) = match op {
        Op::AddNamespace { name } => (Some(Some(name.as_str())), None),
        Op::AddLink { ns, spec, .. } => match &spec.kind {
            LinkKind::Veth { peer_ns, .. } => (Some(ns_key(ns)), Some(ns_key(peer_ns))),
            _ => (Some(ns_key(ns)), None),
        },
        Op::SetLink { ns, .. } => (Some(ns_key(ns)), None),
        _ => (None, None),
    };
    first.into_iter().chain(second)
}

/// One helper thread that runs the batches it is handed, one after another (one at a time: the
/// pass's own thread keeps the other CPU busy).
pub(crate) struct Lane {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Result<Outcome, Error>>,
    in_flight: usize,
}

impl Lane {
    /// Starts the helper in `scope`; it ends when the lane is dropped.
    pub(crate) fn start<'scope, 'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        ops: &'env [Op],
    ) -> Lane {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (outbox, done) = mpsc::channel();
        scope.spawn(move || {
            for job in inbox {
                if outbox.send(run(job, ops)).is_err() {
                    break;
                }
            }
        });
        Lane {
            jobs: Some(jobs),
            done,
            in_flight: 0,
        }
    }

    /// Hands a batch to the helper.
    pub(crate) fn send(&mut self, job: Job) -> Result<(), Error> {
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(helper_gone)?;
        self.in_flight += 1;
        Ok(())
    }

    /// Waits for every batch handed over so far.
    pub(crate) fn wait(&mut self) -> Result<Vec<Outcome>, Error> {
        let mut out = Vec::with_capacity(self.in_flight);
        while self.in_flight > 0 {
            let outcome = self.done.recv().map_err(|_| helper_gone())?;
            self.in_flight -= 1;
            out.push(outcome?);
        }
        Ok(out)
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // Closing the channel ends the helper's loop.
        self.jobs = None;
    }
}

fn helper_gone() -> Error {
    Error::Namespace {
        ns: "nft".into(),
        message: "the nft helper thread ended early".into(),
    }
}

/// What one namespace's batch needs, gathered on the pass's thread.
pub(crate) struct Job {
    ns: Netns,
    /// The indexes of the namespace's nft ops in the pass's ops.
    mine: Vec<usize>,
    file: File,
    /// Made in this pass: it has no tables, so there is nothing to list.
    fresh: bool,
    loader: NftLoader,
}

/// What a batch did.
pub(crate) struct Outcome {
    /// nft ops applied.
    pub(crate) applied: usize,
    /// nft ops that failed, with why.
    pub(crate) failed: Vec<(String, String)>,
    /// How long the batch took on its thread.
    pub(crate) took: Duration,
    /// How many nft ops of the namespace there were.
    pub(crate) ops: u32,
}

/// The job of `ns`'s batch.
pub(crate) fn job(pass: &Pass<'_>, schedule: &Schedule, ns: &Netns) -> Result<Job, Error> {
    Ok(Job {
        ns: ns.clone(),
        mine: schedule.ops_of.get(ns).cloned().unwrap_or_default(),
        file: pass.open_ns(ns)?,
        fresh: pass.is_created(ns),
        loader: pass.nft_loader(),
    })
}

/// Runs every nft op of the job's namespace in `ops` as one atomic batch: compiled to nfnetlink
/// messages (no parser, no cache dumps), or, with [`NftLoader::Text`], printed as nft text for
/// libnftables. An `Err` is fatal (the namespace cannot be entered); a refused batch fails its
/// ops.
pub(crate) fn run(job: Job, ops: &[Op]) -> Result<Outcome, Error> {
    let started = Instant::now();
    let Job {
        ns,
        mine,
        file,
        fresh,
        loader,
    } = job;
    let mine: Vec<&Op> = mine.iter().filter_map(|&i| ops.get(i)).collect();
    let mut outcome = Outcome {
        applied: 0,
        failed: Vec::new(),
        took: Duration::ZERO,
        ops: mine.len() as u32,
    };
    let mut conn = Conn::open(NETLINK_NETFILTER, &file, &ns.to_string())?;
    let mut present: BTreeSet<(crate::NftFamily, String)> = if fresh {
        BTreeSet::new()
    } else {
        nft::list_tables(&mut conn)
            .map_err(nl(&ns, "list nft tables"))?
            .into_iter()
            .map(|t| (t.family, t.name))
            .collect()
    };
    let mut text = String::new();
    let mut wire = (loader == NftLoader::Netlink).then(nft_wire::Batch::default);
    let indexes = if wire.is_some() {
        device_indexes(&file, &ns.to_string(), &mine)?
    } else {
        HashMap::new()
    };
    let ifindex = |dev: &str| indexes.get(dev).copied();
    let mut batched = Vec::new();
    // Whether the batch deletes a table (a replacement deletes the old one first).
    let mut deleted = false;
    for op in mine {
        let (key, table) = match op {
            Op::ReplaceNft { key, table } => (key, Some(table)),
            Op::DelNft(key) => (key, None),
            _ => continue,
        };
        let was_present = present.contains(&(key.family, key.name.clone()));
        let compiled = match (wire.is_some(), table) {
            (true, Some(t)) => nft_compile::compile(t, nft::comment_for(t), &ifindex).map(Some),
            _ => Ok(None),
        };
        let part = compiled.and_then(|c| Ok((c, nft::batch(&[(key, table)], &mut present)?)));
        let (compiled, part) = match part {
            Ok(x) => x,
            Err(message) => {
                outcome.failed.push((format!("{op:?}"), message));
                continue;
            }
        };
        text.push_str(&part);
        batched.push(op);
        deleted |= was_present;
        if let Some(batch) = wire.as_mut() {
            if was_present {
                batch.delete_table(key.family, &key.name);
            }
            if let Some(t) = compiled {
                batch.add_table(&t);
            }
        }
    }
    if text.is_empty() {
        // Nothing, or only deletions of tables that are already gone.
        outcome.applied += batched.len();
    } else {
        let result = match wire {
            Some(batch) => conn.nft_batch(&batch).map_err(|e| e.message),
            None => nft::run(&file, &ns.to_string(), &text).map_err(|e| e.to_string()),
        };
        match result {
            Ok(()) => outcome.applied += batched.len(),
            Err(message) => {
                let message = format!("nft in {ns}: {message}");
                for op in batched {
                    outcome.failed.push((format!("{op:?}"), message.clone()));
                }
            }
        }
    }
    // A batch that deleted a table leaves its destruction to the kernel's deferred work, and
    // closing the socket waits for that work: the pass need not. Other sockets close here (a
    // thousand handed to the closer at once would only compete for the CPU).
    if deleted {
        conn.close_in_background();
    }
    outcome.took = started.elapsed();
    Ok(outcome)
}

/// The index of every device the tables `ops` load name (hooks and maps), looked up inside the
/// namespace: one entry for every device that exists. Compiling a table whose device is missing
/// (a hypervisor's tap not made yet) fails that table alone, where the kernel would refuse the
/// namespace's whole batch.
fn device_indexes(file: &File, label: &str, ops: &[&Op]) -> Result<HashMap<String, u32>, Error> {
    let names: BTreeSet<String> = ops
        .iter()
        .filter_map(|op| match op {
            Op::ReplaceNft { table, .. } => Some(table),
            _ => None,
        })
        .flat_map(|t| t.devices().map(str::to_string))
        .collect();
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    super::netns::in_netns(file, label, || {
        names
            .into_iter()
            .filter_map(|name| {
                let c = std::ffi::CString::new(name.as_str()).ok()?;
                // SAFETY: `c` is a NUL-terminated string that outlives the call.
                let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
                (index != 0).then_some((name, index))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LinkSpec, NftFamily, NftKey};

    fn nft(ns: &Netns) -> Op {
        Op::ReplaceNft {
            key: NftKey {
                ns: ns.clone(),
                family: NftFamily::Ip,
                name: "dvrmesh".into(),
            },
            table: crate::nft::Table {
                family: NftFamily::Ip,
                name: "dvrmesh".into(),
                sets: vec![],
                chains: vec![],
            },
        }
    }

    fn link(ns: &Netns, name: &str) -> Op {
        Op::AddLink {
            ns: ns.clone(),
            name: name.into(),
            spec: LinkSpec::of(LinkKind::Bridge),
        }
    }

    #[test]
    fn a_batch_starts_after_the_last_link_op_of_its_namespace_and_any_deletion_before_it() {
        let a = Netns::Named("qrouter-a".into());
        let host = Netns::Host;
        let ops = vec![
            Op::AddNamespace {
                name: "qrouter-a".into(),
            }, // 0
            link(&host, "br-1"), // 1
            link(&a, "qr-1"),    // 2
            link(&host, "br-2"), // 3
            Op::DelLink {
                ns: host.clone(),
                name: "br-9".into(),
            }, // 4
            link(&host, "br-3"), // 5
            nft(&a),             // 6
            nft(&host),          // 7
        ];
        let starts = schedule(&ops).starts;
        // `a`: its last link op is 2, but the deletion at 4 comes before its first nft op.
        assert_eq!(starts.get(&5), Some(&vec![a.clone()]));
        // host: after its last link op, 5.
        assert_eq!(starts.get(&6), Some(&vec![host.clone()]));
        assert_eq!(starts.len(), 2);
    }

    #[test]
    fn a_namespace_with_nothing_before_its_batch_starts_at_once() {
        let a = Netns::Named("fip-x".into());
        let ops = vec![link(&Netns::Host, "br-1"), nft(&a)];
        assert_eq!(schedule(&ops).starts.get(&0), Some(&vec![a]));
    }

    #[test]
    fn a_veth_whose_peer_lands_in_the_namespace_prepares_it() {
        let a = Netns::Named("qrouter-a".into());
        let mut veth = link(&Netns::Host, "tqr1");
        if let Op::AddLink { spec, .. } = &mut veth {
            spec.kind = LinkKind::Veth {
                peer: "qr-1".into(),
                peer_ns: a.clone(),
            };
        }
        let ops = vec![veth, link(&Netns::Host, "br-1"), nft(&a)];
        assert_eq!(schedule(&ops).starts.get(&1), Some(&vec![a]));
    }

    #[test]
    fn each_namespace_batch_holds_its_own_nft_ops_in_order() {
        let a = Netns::Named("qrouter-a".into());
        let b = Netns::Named("qrouter-b".into());
        let ops = vec![nft(&a), link(&b, "qr-1"), nft(&b), nft(&a)];
        let s = schedule(&ops);
        assert_eq!(s.ops_of.get(&a), Some(&vec![0, 3]));
        assert_eq!(s.ops_of.get(&b), Some(&vec![2]));
        assert_eq!(s.ops_of.len(), 2);
        // A namespace's batch is scheduled once: `a` at once, `b` after its link.
        assert_eq!(s.starts.get(&0), Some(&vec![a]));
        assert_eq!(s.starts.get(&2), Some(&vec![b]));
    }
}
