//! No leaked processes: closing a session ends every descendant of its agent — including tool
//! processes in their own sessions, daemons re-parented away from the CLI and processes that
//! ignore SIGTERM — and the executor (a child subreaper) leaves no zombie behind.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;

/// A CLI that leaves a setsid'd orphan and a double-forked daemon (both ignore SIGTERM), and
/// itself ignores SIGTERM, then keeps its turn running.
const ESCAPER: &str =
    "FAKE:spawn_orphan\nFAKE:spawn_daemon\nFAKE:ignore_sigterm\nFAKE:sleep:60000\nescape";

const GRACE: &[(&str, &str)] = &[
    ("SESSION_EOF_GRACE_MS", "100"),
    ("SESSION_TERM_GRACE_MS", "300"),
];

/// Starts escapers for `ids` and waits until each has its three processes.
async fn escapers(exec: &Executor, ids: &[i64]) {
    for id in ids {
        post_task(exec, *id, 1, ESCAPER).await;
    }
    for id in ids {
        let dir = exec.workspace().join(id.to_string());
        let ok = wait_until(Duration::from_secs(15), || processes_in(&dir).len() >= 3).await;
        assert!(
            ok,
            "task {id}: {}\n{}",
            describe(&processes_in(&dir)),
            exec.logs_tail(30)
        );
    }
}

async fn assert_clean(exec: &Executor) {
    let left = processes_in(exec.workspace());
    assert!(left.is_empty(), "left behind: {}", describe(&left));
    common::assert_reaped(exec.pid(), Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_session_ends_escaped_and_daemonised_descendants() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, GRACE).await;
    escapers(&exec, &[1]).await;
    let (status, _) = exec.delete("/api/tasks/session?task_id=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_clean(&exec).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn close_claude_and_close_all_end_every_descendant() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, GRACE).await;
    escapers(&exec, &[2, 3]).await;
    let (status, body) = exec.delete("/api/tasks/claude/sessions").await;
    assert_eq!((status, body["closed"].as_i64()), (StatusCode::OK, Some(2)));
    assert_clean(&exec).await;
    escapers(&exec, &[4, 5]).await;
    let (status, body) = exec.delete("/api/tasks/sessions/close").await;
    assert_eq!((status, body["closed"].as_i64()), (StatusCode::OK, Some(2)));
    assert_clean(&exec).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_cli_takes_its_escaped_tools_with_it() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, GRACE).await;
    let done = run_task(
        &exec,
        &rx,
        6,
        1,
        "FAKE:spawn_orphan\nFAKE:spawn_daemon\nFAKE:crash:9\nboom",
    )
    .await;
    assert_eq!(done["status"], "FAILED");
    let dir = exec.workspace().join("6");
    let gone = wait_until(Duration::from_secs(10), || processes_in(&dir).is_empty()).await;
    assert!(gone, "left behind: {}", describe(&processes_in(&dir)));
    assert_clean(&exec).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_to_the_executor_ends_escaped_descendants_too() {
    let rx = CallbackReceiver::start();
    let mut exec = start_fake(&rx, GRACE).await;
    escapers(&exec, &[7]).await;
    let ws = exec.workspace().to_path_buf();
    assert_eq!(
        exec.terminate().await.code(),
        Some(0),
        "{}",
        exec.logs_tail(30)
    );
    let left = processes_in(&ws);
    assert!(left.is_empty(), "left behind: {}", describe(&left));
}

/// A tool that sheds everything the sweeps follow: no marker (`env -i`), its own session, and
/// SIGTERM ignored; its parent exits at once, so the executor adopts it. `tag` is the sleep's
/// argument, to find it by command line; `cd` is where it works.
fn shedder(tag: u32, cd: &str) -> String {
    format!(
        "FAKE:sh:cd {cd} && setsid env -i sh -c 'trap \"\" TERM; exec sleep {tag}' </dev/null >/dev/null 2>&1 &\nshed"
    )
}

/// The pid of the process whose command line is `sleep <tag>`, once it exists.
async fn find_sleep(tag: u32) -> u32 {
    let wanted = format!("sleep {tag}");
    let mut found = None;
    let ok = wait_until(Duration::from_secs(15), || {
        found = common::procs::all_pids()
            .into_iter()
            .find(|p| common::procs::cmdline(*p).as_deref() == Some(wanted.as_str()));
        found.is_some()
    })
    .await;
    assert!(ok, "no `{wanted}` process appeared");
    found.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn adopted_tools_without_marker_end_with_their_task_and_at_close_all() {
    let rx = CallbackReceiver::start();
    let mut exec = start_fake(&rx, GRACE).await;

    // Working in its task's directory: ended when that task's session is closed.
    let done = run_task(&exec, &rx, 31, 1, &shedder(31311, ".")).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let pid = find_sleep(31311).await;
    let adopted = wait_until(Duration::from_secs(10), || {
        common::procs::proc_stat(pid).is_some_and(|(_, ppid, _)| ppid == exec.pid())
    })
    .await;
    assert!(adopted, "the shed tool was not adopted by the executor");
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&env).contains("EXECUTOR_AGENT_MARKER"),
        "the tool was meant to shed the marker"
    );
    let (status, _) = exec.delete("/api/tasks/session?task_id=31").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !is_alive(pid),
        "the adopted tool survived closing its session"
    );

    // Working elsewhere: nobody can tell its task, so close-all ends it.
    let done = run_task(&exec, &rx, 32, 1, &shedder(31312, "/")).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let pid = find_sleep(31312).await;
    let (status, _) = exec.delete("/api/tasks/sessions/close").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!is_alive(pid), "the adopted tool survived close-all");
    assert_clean(&exec).await;

    // And at SIGTERM.
    let done = run_task(&exec, &rx, 33, 1, &shedder(31313, "/")).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let pid = find_sleep(31313).await;
    assert_eq!(
        exec.terminate().await.code(),
        Some(0),
        "{}",
        exec.logs_tail(20)
    );
    assert!(
        !is_alive(pid),
        "the adopted tool survived the executor's SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_killed_executor_left_running_is_ended_before_the_next_one_serves() {
    let rx = CallbackReceiver::start();
    let root = tempfile::tempdir().unwrap();
    let ws = root.path().join("ws");
    let opts = || {
        ExecutorOptions::new()
            .callback_url(rx.url())
            .env("ANTHROPIC_API_KEY", "sk-test")
            .workspace(&ws)
    };
    let mut first = Executor::start(opts()).await;
    // A running turn with a marked orphan, a daemon and a tool that shed the marker.
    post_task(
        &first,
        41,
        1,
        &format!(
            "FAKE:spawn_orphan\nFAKE:spawn_daemon\n{}\nFAKE:wait_file:{}\nbusy",
            shedder(31314, ".").lines().next().unwrap_or_default(),
            root.path().join("never").display()
        ),
    )
    .await;
    let dir = ws.join("41");
    let ok = wait_until(Duration::from_secs(15), || processes_in(&dir).len() >= 4).await;
    assert!(ok, "{}", describe(&processes_in(&dir)));
    let shed = find_sleep(31314).await;
    let before = processes_in(&dir);
    first.kill();
    // The tools ignore SIGTERM and need no stdin: the crash leaves them running (the CLI itself
    // may exit on its own when its stdin closes, so it is not part of this check).
    let tools: Vec<u32> = before
        .iter()
        .copied()
        .filter(|p| common::procs::cmdline(*p).is_some_and(|c| c.starts_with("sleep")))
        .collect();
    assert!(tools.len() >= 3, "{}", describe(&before));
    assert!(
        tools.iter().all(|p| is_alive(*p)),
        "the crash itself should leave the tools running"
    );

    let second = Executor::start(opts()).await;
    // Ended before the listening line was printed; init reaps them.
    let gone = wait_until(Duration::from_secs(5), || {
        before.iter().all(|p| !is_alive(*p)) && !is_alive(shed)
    })
    .await;
    assert!(
        gone,
        "left running by the killed executor: {}\n{}",
        describe(&before),
        second.logs_tail(20)
    );
    assert!(
        second
            .logs()
            .iter()
            .any(|l| l.contains("left running by an earlier executor")),
        "{}",
        second.logs_tail(20)
    );
}

/// `(nice, scheduling policy)` from a `/proc/<pid>/stat` line (fields 19 and 41).
fn nice_and_policy(stat: &str) -> (i64, i64) {
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(-1);
    (num(16), num(38))
}

/// The CLI of task `id` while its turn is held, and what a tool it ran saw of itself.
async fn priorities(exec: &Executor, rx: &CallbackReceiver, id: i64, sub: i64) -> [(i64, i64); 2] {
    let dir = exec.workspace().join(id.to_string());
    let release = exec.tmp_root().join(format!("release-{id}-{sub}"));
    let seen = dir.join(format!("tool-stat-{sub}"));
    // Written aside and renamed: the file appears only once it is complete.
    let prompt = format!(
        "FAKE:sh:cat /proc/self/stat > {0}.tmp && mv {0}.tmp {0}\nFAKE:wait_file:{1}\nheld",
        seen.display(),
        release.display()
    );
    post_task(exec, id, sub, &prompt).await;
    let ok = wait_until(Duration::from_secs(15), || {
        seen.exists() && !processes_in(&dir).is_empty()
    })
    .await;
    assert!(ok, "{}", exec.logs_tail(20));
    let cli = processes_in(&dir)
        .into_iter()
        .find(|p| common::procs::cmdline(*p).is_some_and(|c| c.contains("fake-claude")))
        .expect("the CLI process");
    let cli_stat = std::fs::read_to_string(format!("/proc/{cli}/stat")).unwrap();
    let tool_stat = std::fs::read_to_string(&seen).unwrap();
    std::fs::write(&release, "go").unwrap();
    assert_eq!(
        rx.wait_terminal(id, sub, FAKE_WAIT).await["status"],
        "COMPLETED"
    );
    [nice_and_policy(&cli_stat), nice_and_policy(&tool_stat)]
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_and_their_tools_run_nicer_than_the_executor_also_after_a_resume() {
    const SCHED_BATCH: i64 = 3;
    const SCHED_IDLE: i64 = 5;
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("CLAUDE_IDLE_TIMEOUT_SECS", "1")]).await;
    let own = std::fs::read_to_string(format!("/proc/{}/stat", exec.pid())).unwrap();
    assert_eq!(
        nice_and_policy(&own),
        (0, 0),
        "the executor itself runs normally"
    );
    assert_eq!(priorities(&exec, &rx, 51, 1).await, [(10, SCHED_IDLE); 2]);
    // Idle past the timeout: the process is suspended; the next subtask resumes in a new one.
    let dir = exec.workspace().join("51");
    let suspended = wait_until(Duration::from_secs(15), || processes_in(&dir).is_empty()).await;
    assert!(suspended, "{}", exec.logs_tail(20));
    assert_eq!(priorities(&exec, &rx, 51, 2).await, [(10, SCHED_IDLE); 2]);

    let rx = CallbackReceiver::start();
    let batch = start_fake(&rx, &[("AGENT_SCHED_POLICY", "batch"), ("AGENT_NICE", "5")]).await;
    assert_eq!(priorities(&batch, &rx, 53, 1).await, [(5, SCHED_BATCH); 2]);

    let rx = CallbackReceiver::start();
    let off = start_fake(&rx, &[("AGENT_NICE", "0")]).await;
    assert_eq!(priorities(&off, &rx, 52, 1).await, [(0, 0); 2]);
}

/// `(thread name, scheduling policy)` of each of `pid`'s threads.
fn thread_policies(pid: u32) -> Vec<(String, i64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            Some((comm.trim().to_string(), nice_and_policy(&stat).1))
        })
        .collect()
}

/// Polls until `pid` has threads named `callback-spool` and `log-writer`; their policies and
/// those of every other thread.
async fn helper_and_other_policies(pid: u32) -> (Vec<i64>, Vec<(String, i64)>) {
    let helper = |n: &str| n == "callback-spool" || n == "log-writer";
    let ok = wait_until(Duration::from_secs(10), || {
        let names: Vec<String> = thread_policies(pid).into_iter().map(|(n, _)| n).collect();
        names.iter().any(|n| n == "callback-spool") && names.iter().any(|n| n == "log-writer")
    })
    .await;
    assert!(
        ok,
        "no spool or log writer thread: {:?}",
        thread_policies(pid)
    );
    let (helpers, others): (Vec<_>, Vec<_>) = thread_policies(pid)
        .into_iter()
        .partition(|(n, _)| helper(n));
    (helpers.into_iter().map(|(_, p)| p).collect(), others)
}

/// Beside idle-policy agents (the default) the spool and log writers run `SCHED_IDLE`, so a
/// write preempts neither an HTTP worker nor an agent; every other executor thread, and with
/// any other agent priority every thread, runs normally.
#[tokio::test(flavor = "multi_thread")]
async fn helper_threads_run_idle_only_beside_idle_agents() {
    const SCHED_IDLE: i64 = 5;
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let (helpers, others) = helper_and_other_policies(exec.pid()).await;
    assert_eq!(helpers, [SCHED_IDLE; 2]);
    // A task, so that launcher, reaper and blocking-pool threads exist too.
    post_task(&exec, 61, 1, "hello").await;
    assert_eq!(
        rx.wait_terminal(61, 1, FAKE_WAIT).await["status"],
        "COMPLETED"
    );
    let (_, others_after) = helper_and_other_policies(exec.pid()).await;
    for (name, policy) in others.iter().chain(&others_after) {
        // The launchers and reapers run at the agents' priority (SCHED_IDLE), by design.
        if !name.starts_with("agent-") {
            assert_eq!(*policy, 0, "{name} runs under policy {policy}");
        }
    }
    assert!(others.iter().any(|(n, _)| n.starts_with("tokio")));

    for env in [[("AGENT_NICE", "0")], [("AGENT_SCHED_POLICY", "batch")]] {
        let rx = CallbackReceiver::start();
        let exec = start_fake(&rx, &env).await;
        let (helpers, _) = helper_and_other_policies(exec.pid()).await;
        assert_eq!(helpers, [0, 0], "with {env:?}");
    }
}

/// CPU time used so far by the processes whose command line contains `marker`.
fn burnt(marker: &str) -> Duration {
    common::procs::all_cmdlines()
        .iter()
        .filter(|(_, c)| c.contains(marker))
        .filter_map(|(pid, _)| common::procs::cpu_time(*pid))
        .sum()
}

/// While idle-policy agents keep every CPU busy, the helpers (idle-policy too, beside them)
/// still write the spool and the log: a task posted meanwhile gets its callbacks, in order,
/// its terminal last, and so do the busy ones once they stop.
#[tokio::test(flavor = "multi_thread")]
async fn callbacks_flow_while_idle_agents_saturate_every_cpu() {
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let stop = exec.workspace().join("stop-burning");
    let burners = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
    let burn = format!(
        "FAKE:sh:timeout 60 sh -c 'while [ ! -e {} ]; do :; done'\nburnt",
        stop.display()
    );
    for i in 0..burners as i64 {
        post_task(&exec, 70 + i, 1, &burn).await;
    }
    // Busy for real: the burners have used half a second of CPU each on average, every CPU taken.
    let marker = stop.display().to_string();
    let busy = wait_until(Duration::from_secs(30), || {
        burnt(&marker) >= Duration::from_millis(500) * burners as u32
    })
    .await;
    assert!(busy, "the burners did not burn: {}", exec.logs_tail(20));

    post_task(&exec, 90, 1, "hello").await;
    let t = rx.wait_terminal(90, 1, FAKE_WAIT).await;
    assert_eq!(t["status"], "COMPLETED", "{}", rx.dump());
    let seqs: Vec<String> = rx
        .received()
        .iter()
        .filter(|c| is_subtask(&c.body, 90, 1))
        .map(|c| c.header("x-callback-sequence").unwrap_or("").to_string())
        .collect();
    let expected: Vec<String> = (1..=seqs.len()).map(|n| n.to_string()).collect();
    assert_eq!(seqs, expected, "in order, none missing: {}", rx.dump());

    std::fs::write(&stop, "").unwrap();
    for i in 0..burners as i64 {
        let t = rx.wait_terminal(70 + i, 1, FAKE_WAIT).await;
        assert_eq!(t["status"], "COMPLETED", "{}", rx.dump());
    }
    assert_one_terminal_each(&exec, &rx, 90, &[1], 2).await;
}

/// The `THP_enabled` line of a `/proc/<pid>/status` text.
fn thp_enabled(status: &str) -> Option<String> {
    status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .map(|l| l.trim_start_matches("THP_enabled:").trim().to_string())
}

/// The executor keeps its allocator from asking for huge pages without disabling them for the
/// process (`PR_SET_THP_DISABLE` is inherited across exec): the agents and their tools keep the
/// host's transparent-huge-page setting, the same as the process that started the executor.
#[tokio::test(flavor = "multi_thread")]
async fn agents_keep_the_hosts_huge_page_setting() {
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let Some(expected) = thp_enabled(&ours) else {
        return; // a kernel without the field (before 6.0) has nothing to inherit or check
    };
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let own = std::fs::read_to_string(format!("/proc/{}/status", exec.pid())).unwrap();
    assert_eq!(
        thp_enabled(&own).as_deref(),
        Some(expected.as_str()),
        "the executor"
    );
    let seen = exec.workspace().join("61").join("tool-status");
    let prompt = format!(
        "FAKE:sh:cat /proc/self/status > {0}.tmp && mv {0}.tmp {0}\ndone",
        seen.display()
    );
    post_task(&exec, 61, 1, &prompt).await;
    assert_eq!(
        rx.wait_terminal(61, 1, FAKE_WAIT).await["status"],
        "COMPLETED"
    );
    let tool = std::fs::read_to_string(&seen).unwrap();
    assert_eq!(
        thp_enabled(&tool).as_deref(),
        Some(expected.as_str()),
        "a tool the agent ran"
    );
}
