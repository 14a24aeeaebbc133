//! Data-driven scenario tests: each `core/tests/raft_scenarios/*.txt` script is a list of
//! commands run against the harness; the transcript (commands, notable events, status
//! tables, results) is checked with an `insta` snapshot, so a behaviour change shows up
//! as a readable diff.
//!
//! Commands (one per line, `#` starts a comment that is echoed):
//! ```text
//! cluster voters=1,2,3 [priorities=1:3,2:2] [learners=4] [extra=5] [coalesced]
//!         [cache_bytes=N] [chunk_bytes=N] [recovery_rate=N] [auto_priority=off]
//!         [check_quorum=off] [pre_vote=off]
//! campaign N            start an election on N now
//! run DUR               advance time (e.g. 300ms, 2s), printing role changes
//! run-until-leader N [max=DUR]
//! propose N PAYLOAD [count=C]
//! propose-many N COUNT  propose COUNT one-offset entries on N
//! load N COUNT EVERY    propose COUNT entries on whoever leads, one every EVERY
//! partition A B | C D   isolate N   heal   delay N DUR
//! crash N   restart N   step-down N   transfer FROM TO   snapshot N
//! config N add-learner|promote|demote|remove|priority ID [PRIO]
//! status   members   log N   check   stats N
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use oxbow_core::raft::*;

use crate::harness::{Cluster, Options};

fn dur(s: &str) -> Duration {
    if let Some(ms) = s.strip_suffix("ms") {
        Duration::from_millis(ms.parse().unwrap())
    } else if let Some(sec) = s.strip_suffix('s') {
        Duration::from_secs_f64(sec.parse().unwrap())
    } else {
        panic!("bad duration {s}")
    }
}

fn ids(s: &str) -> Vec<NodeId> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().unwrap())
        .collect()
}

struct Runner {
    c: Option<Cluster>,
    out: String,
    trace_seen: usize,
    payload_seq: u64,
}

impl Runner {
    fn c(&mut self) -> &mut Cluster {
        self.c.as_mut().expect("cluster first")
    }

    fn flush_trace(&mut self) {
        let Some(c) = self.c.as_ref() else { return };
        for t in &c.trace[self.trace_seen..] {
            let _ = writeln!(self.out, "  {t}");
        }
        self.trace_seen = c.trace.len();
    }

    fn cluster(&mut self, args: &[&str]) {
        let mut voters = vec![1, 2, 3];
        let mut prios: Vec<(NodeId, Priority)> = Vec::new();
        let mut o = Options::new(0, 7);
        for a in args {
            let (k, v) = a.split_once('=').unwrap_or((a, ""));
            match k {
                "voters" => voters = ids(v),
                "priorities" => {
                    prios = v
                        .split(',')
                        .map(|p| {
                            let (i, q) = p.split_once(':').unwrap();
                            (i.parse().unwrap(), q.parse().unwrap())
                        })
                        .collect()
                }
                "learners" => o.learners = ids(v),
                "extra" => o.extra_nodes = ids(v),
                "coalesced" => o.raft.coalesced_heartbeats = true,
                "cache_bytes" => o.raft.entry_cache_bytes = v.parse().unwrap(),
                "chunk_bytes" => o.raft.snapshot_chunk_bytes = v.parse().unwrap(),
                "recovery_rate" => o.raft.recovery_rate_bytes_per_sec = v.parse().unwrap(),
                "check_quorum" => o.raft.check_quorum = v != "off",
                "pre_vote" => o.raft.pre_vote = v != "off",
                "auto_priority" => o.raft.auto_transfer_to_priority = v != "off",
                "seed" => o.seed = v.parse().unwrap(),
                other => panic!("unknown cluster option {other}"),
            }
        }
        o.voters = voters
            .iter()
            .map(|&v| {
                (
                    v,
                    prios.iter().find(|p| p.0 == v).map_or(DEFAULT_PRIORITY, |p| p.1),
                )
            })
            .collect();
        self.c = Some(Cluster::new(o));
        self.trace_seen = 0;
    }

    fn status(&mut self) {
        let c = self.c.as_ref().unwrap();
        let _ = writeln!(
            self.out,
            "  node role          term leader commit applied last      snapshot"
        );
        for (id, n) in &c.nodes {
            match n.raft.as_ref() {
                None => {
                    let _ = writeln!(self.out, "  n{id:<3} (down)");
                }
                Some(r) => {
                    let last = r
                        .last_log_id()
                        .map_or("-".into(), |l| format!("{}@t{}", l.index, l.term));
                    let snap = r
                        .snapshot()
                        .map_or("-".into(), |s| format!("{}@t{}", s.last.index, s.last.term));
                    let opt = |x: Option<u64>| x.map_or("-".into(), |v| v.to_string());
                    let _ = writeln!(
                        self.out,
                        "  n{id:<3} {:<13} {:<4} {:<6} {:<6} {:<7} {:<9} {}",
                        format!("{:?}", r.role()),
                        r.term(),
                        opt(r.leader()),
                        opt(r.commit_index()),
                        opt(r.applied_index()),
                        last,
                        snap
                    );
                }
            }
        }
    }

    fn log(&mut self, id: NodeId) {
        let c = self.c.as_ref().unwrap();
        let n = &c.nodes[&id];
        let mut line = String::from("  ");
        if let Some((m, _)) = &n.written.snapshot {
            let _ = write!(line, "[snapshot ..={} t{}] ", m.last.index, m.last.term);
        }
        for e in &n.written.log {
            let what = match e.kind {
                EntryKind::Noop => "noop".to_string(),
                EntryKind::Config => {
                    let m = e.membership().unwrap();
                    format!(
                        "config voters={:?} learners={:?}",
                        m.voters().keys().collect::<Vec<_>>(),
                        m.learners()
                    )
                }
                _ => format!("{:?}", String::from_utf8_lossy(&e.payload)),
            };
            let range = if e.count() == 1 {
                e.index.to_string()
            } else {
                format!("{}..={}", e.index, e.last_index)
            };
            let _ = write!(line, "[{range} t{} {what}] ", e.term);
        }
        let _ = writeln!(self.out, "{}", line.trim_end());
    }

    fn config(&mut self, args: &[&str]) {
        let n: NodeId = args[0].parse().unwrap();
        let target: NodeId = args[2].parse().unwrap();
        let prio = args.get(3).map_or(DEFAULT_PRIORITY, |p| p.parse().unwrap());
        let change = match args[1] {
            "add-learner" => ConfigChange::AddLearner(target),
            "promote" => ConfigChange::PromoteLearner(target, prio),
            "demote" => ConfigChange::DemoteVoter(target),
            "remove" => ConfigChange::RemoveNode(target),
            "priority" => ConfigChange::SetPriority(target, prio),
            other => panic!("unknown change {other}"),
        };
        let r = self.c().with(n, |r, now| r.propose_config_change(now, change));
        let _ = writeln!(self.out, "  {r:?}");
    }

    fn exec(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (cmd, args) = (words[0], &words[1..]);
        let num = |i: usize| -> NodeId { args[i].parse().unwrap() };
        match cmd {
            "cluster" => self.cluster(args),
            "campaign" => {
                self.c().with(num(0), |r, now| r.campaign(now));
            }
            "run" => self.c().run_for(dur(args[0])),
            "run-until-leader" => {
                let want = num(0);
                let max = args
                    .get(1)
                    .and_then(|a| a.strip_prefix("max="))
                    .map_or(Duration::from_secs(10), dur);
                let ok = self
                    .c()
                    .run_until(max, |c| c.is_up(want) && c.raft(want).role() == Role::Leader);
                self.flush_trace();
                let t = self.c().now;
                let _ = writeln!(self.out, "  leader n{want}: {ok} at {t:?}");
            }
            "propose" => {
                let count = args
                    .get(2)
                    .and_then(|a| a.strip_prefix("count="))
                    .map_or(1, |c| c.parse().unwrap());
                let r = self.c().propose(num(0), args[1], count);
                let _ = writeln!(self.out, "  {r:?}");
            }
            "propose-many" => {
                let (n, count) = (num(0), num(1));
                let mut ok = 0;
                let mut last = None;
                for _ in 0..count {
                    self.payload_seq += 1;
                    let p = format!("m{}", self.payload_seq);
                    if let Ok(id) = self.c().propose(n, &p, 1) {
                        ok += 1;
                        last = Some(id.index);
                    }
                }
                let _ = writeln!(self.out, "  accepted {ok}/{count}, last offset {last:?}");
            }
            "load" => self.load(num(0), num(1), dur(args[2])),
            "partition" => {
                let joined = args.join(" ");
                let groups: Vec<Vec<NodeId>> = joined
                    .split('|')
                    .map(|g| g.split_whitespace().map(|x| x.parse().unwrap()).collect())
                    .collect();
                self.c().partition(&groups);
            }
            "isolate" => self.c().isolate(num(0)),
            "heal" => self.c().heal(),
            "delay" => {
                let d = dur(args[1]);
                self.c().slow.insert(num(0), d);
            }
            "crash" => self.c().crash(num(0)),
            "restart" => self.c().restart(num(0)),
            "step-down" => {
                self.c().with(num(0), |r, now| r.step_down(now));
            }
            "transfer" => {
                let to = num(1);
                let r = self.c().with(num(0), |r, now| r.transfer_leadership(now, to));
                let _ = writeln!(self.out, "  {r:?}");
            }
            "snapshot" => {
                let m = self.c().take_snapshot(num(0));
                let _ = writeln!(self.out, "  {:?}", m.map(|m| m.last));
            }
            "config" => self.config(args),
            "status" => self.status(),
            "members" => {
                let c = self.c.as_ref().unwrap();
                let mut lines = Vec::new();
                for (id, n) in &c.nodes {
                    if let Some(r) = n.raft.as_ref() {
                        let m = r.membership();
                        lines.push(format!(
                            "  n{id}: voters={:?} learners={:?}",
                            m.voters(),
                            m.learners()
                        ));
                    }
                }
                for l in lines {
                    let _ = writeln!(self.out, "{l}");
                }
            }
            "log" => self.log(num(0)),
            "check" => {
                self.c().check_log_matching();
                let _ = writeln!(self.out, "  log matching ok");
            }
            "stats" => {
                let s = self.c().raft(num(0)).stats().clone();
                let _ = writeln!(self.out, "  {s:?}");
            }
            other => panic!("unknown command {other}"),
        }
        self.flush_trace();
    }

    /// Proposes `count` entries, one every `every`, on whoever leads; prints a summary.
    fn load(&mut self, _hint: NodeId, count: u64, every: Duration) {
        let (mut ok, mut refused) = (0, 0);
        let mut errors = std::collections::BTreeMap::<String, u64>::new();
        for _ in 0..count {
            self.payload_seq += 1;
            let p = format!("m{}", self.payload_seq);
            let c = self.c();
            match c.leader() {
                Some(l) => match c.propose(l, &p, 1) {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        refused += 1;
                        *errors.entry(format!("{e:?}")).or_default() += 1;
                    }
                },
                None => {
                    refused += 1;
                    *errors.entry("no leader".into()).or_default() += 1;
                }
            }
            self.c().run_for(every);
            self.flush_trace();
        }
        let _ = writeln!(self.out, "  load: accepted {ok}, refused {refused} {errors:?}");
    }
}

fn run_script(text: &str) -> String {
    let mut r = Runner {
        c: None,
        out: String::new(),
        trace_seen: 0,
        payload_seq: 0,
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            r.out.push('\n');
            continue;
        }
        if line.starts_with('#') {
            let _ = writeln!(r.out, "{line}");
            continue;
        }
        let _ = writeln!(r.out, "> {line}");
        r.exec(line);
    }
    if let Some(c) = r.c.as_ref() {
        c.check_log_matching();
    }
    r.out
}

macro_rules! scenario {
    ($name:ident) => {
        #[test]
        fn $name() {
            let text = include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/raft_scenarios/",
                stringify!($name),
                ".txt"
            ));
            let out = run_script(text);
            insta::assert_snapshot!(stringify!($name), out);
        }
    };
}

scenario!(figure8);
scenario!(prevote_rejoin);
scenario!(check_quorum);
scenario!(priority_settling);
scenario!(transfer_under_load);
scenario!(snapshot_install);
scenario!(membership_leader_crash);
scenario!(leader_removes_itself);
scenario!(self_removal_cut_off);
