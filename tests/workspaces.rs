//! Workspace preparation end to end (issue: workspaces): the real binary clones from a real git
//! server that demands basic auth, with the fake CLI as the agent; attachments and skills come
//! from a test backend. Secrets are searched for everywhere they must not be.
#![allow(clippy::disallowed_methods)] // a test process: it starts the executor and tools; no reaper here

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::test_backend::{git, zip_archive, Backend, GitServer};
use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "ghp-SECRET-token-4711";

fn git_task(task_id: i64, subtask_id: i64, url: &str, token: &str, prompt: &str) -> Value {
    json!({
        "task_id": task_id, "subtask_id": subtask_id, "task_title": "T", "subtask_title": "S",
        "git_url": url, "branch_name": "feature", "git_domain": "127.0.0.1", "git_repo": "org/src",
        "user": {"id": 1, "name": "u", "user_name": "alice", "git_token": token,
                 "git_login": "octo", "git_id": "9"},
        "mode": "coordinate",
        "bot": [{"id": 11, "name": "coder", "shell_type": "ClaudeCode"},
                {"id": 12, "name": "Code Reviewer", "shell_type": "ClaudeCode",
                 "system_prompt": "Review carefully."}],
        "prompt": prompt,
    })
}

async fn post(exec: &Executor, body: &Value) {
    let (status, reply) = exec.post_json("/api/tasks/execute", body).await;
    assert_eq!(status, 200, "{reply}\n{}", exec.logs_tail(40));
}

fn config_of(repo: &Path) -> String {
    std::fs::read_to_string(repo.join(".git/config")).unwrap()
}

fn workbench_has(cb: &Value, file: &str, commit_msg: &str) -> bool {
    let wb = &cb["result"]["workbench"];
    let files = wb["file_changes"].as_array().cloned().unwrap_or_default();
    let commits = wb["git_info"]["task_commits"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    files.iter().any(|f| f["new_path"] == file)
        && commits.iter().any(|c| c["message"] == commit_msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_with_a_token_leaks_it_nowhere_and_the_agent_can_push() {
    let server = GitServer::start("alice", TOKEN);
    server.create_repo(
        "src",
        &[
            ("README.md", "hello\n"),
            ("AGENTS.md", "# rules\n"),
            (".cursorrules", "be nice\n"),
            (".githooks/pre-commit", "#!/bin/sh\nexit 0\n"),
        ],
        &["feature"],
    );
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let ws = exec.workspace().to_path_buf();

    // While the clone is in flight, no process anywhere carries the token in its arguments.
    server.hold();
    post(
        &exec,
        &git_task(31, 1, &server.url("src"), TOKEN, "FAKE:prompt\nfirst"),
    )
    .await;
    assert!(
        server.wait_held(1, Duration::from_secs(20)).await,
        "the clone never reached the git server\n{}",
        exec.logs_tail(40)
    );
    let procs = all_cmdlines();
    let clones: Vec<_> = procs
        .iter()
        .filter(|(_, c)| c.contains(&server.url("src")))
        .collect();
    assert!(!clones.is_empty(), "no git process seen during the clone");
    let leaking: Vec<_> = procs.iter().filter(|(_, c)| c.contains(TOKEN)).collect();
    assert!(
        leaking.is_empty(),
        "token in process arguments: {leaking:?}"
    );
    server.release();

    let done = rx.wait_terminal(31, 1, FAKE_WAIT).await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{done}\n{}",
        exec.logs_tail(40)
    );
    let repo = ws.join("31/src");
    let value = done["result"]["value"].as_str().unwrap().to_string();
    assert!(
        value.contains(&format!("Current working directory: {}", repo.display())),
        "the agent works in the clone: {value}"
    );
    assert!(
        value.contains(&format!("project url:{}", server.url("src"))),
        "{value}"
    );

    // The requested branch, identity, hooks, credential helper — and no token on disk.
    assert_eq!(
        git(&repo, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "feature"
    );
    assert!(repo.join("feature.txt").exists());
    let config = config_of(&repo);
    assert!(
        !config.contains(TOKEN),
        ".git/config holds the token:\n{config}"
    );
    assert!(config.contains("hooksPath = .githooks"), "{config}");
    assert_eq!(git(&repo, &["config", "user.name"]), "octo");
    assert_eq!(
        git(&repo, &["config", "user.email"]),
        "9+octo@users.noreply.github.com"
    );
    assert_eq!(
        git(&repo, &["remote", "get-url", "origin"]),
        server.url("src")
    );
    for entry in walk(&ws) {
        if entry.is_file() {
            let body = std::fs::read(&entry).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&body).contains(TOKEN),
                "token written to {}",
                entry.display()
            );
        }
    }

    // Instruction files, symlink, sub-agents and their exclude entries.
    assert_eq!(
        std::fs::read_link(repo.join("CLAUDE.md")).unwrap(),
        Path::new("AGENTS.md")
    );
    assert_eq!(
        std::fs::read_to_string(repo.join(".claudecode/.cursorrules")).unwrap(),
        "be nice\n"
    );
    let agent = std::fs::read_to_string(repo.join(".claude/agents/code-reviewer-12.md")).unwrap();
    assert!(agent.starts_with("---\nname: code-reviewer\n"), "{agent}");
    assert!(agent.contains("Review carefully."), "{agent}");
    let exclude = std::fs::read_to_string(repo.join(".git/info/exclude")).unwrap();
    for e in [".claudecode/", "CLAUDE.md", ".claude/agents/"] {
        assert!(
            exclude.lines().any(|l| l == e),
            "{e} not excluded:\n{exclude}"
        );
    }
    assert_eq!(
        git(&repo, &["status", "--porcelain"]),
        "",
        "nothing the executor added shows up"
    );
    let upload_packs = |s: &GitServer| {
        s.seen()
            .iter()
            .filter(|r| r.target.contains("git-upload-pack"))
            .count()
    };
    let fetches_after_clone = upload_packs(&server);
    // Left in the tree by "someone": a follow-up must find the tree as it was.
    std::fs::write(repo.join(".git/executor-test-marker"), "still here").unwrap();

    // Follow-up: same tree (no new clone), the agent commits and pushes with the helper; the
    // workbench reports the changed file and the commit while the turn still runs.
    let release = ws.join("release-31");
    let prompt = format!(
        "FAKE:sh:echo change >> README.md && echo new > added.txt && git add -A && git commit -q -m 'agent commit' && git push -q origin HEAD:feature 2>&1\n\
         FAKE:sh:echo more >> README.md\n\
         FAKE:wait_file:{}\nsecond",
        release.display()
    );
    post(&exec, &git_task(31, 2, &server.url("src"), TOKEN, &prompt)).await;
    let seen = rx
        .wait_for(FAKE_WAIT, |cbs| {
            cbs.iter().any(|c| {
                is_subtask(c, 31, 2)
                    && c["status"] == "RUNNING"
                    && workbench_has(c, "added.txt", "agent commit")
            })
        })
        .await;
    let running = seen
        .iter()
        .find(|c| {
            is_subtask(c, 31, 2)
                && c["status"] == "RUNNING"
                && workbench_has(c, "added.txt", "agent commit")
        })
        .unwrap_or_else(|| panic!("no workbench with the agent's work\n{}", rx.dump()));
    let wb = &running["result"]["workbench"];
    assert_eq!(wb["status"], "running");
    assert_eq!(wb["repository"], "org/src");
    assert_eq!(wb["branch"], "feature");
    let readme = wb["file_changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["new_path"] == "README.md")
        .unwrap_or_else(|| panic!("README.md not in {wb}"));
    assert!(readme["added_lines"].as_u64().unwrap() >= 2, "{readme}");
    assert_eq!(wb["git_info"]["target_branch"], "feature");
    std::fs::write(&release, "go").unwrap();
    let done = rx.wait_terminal(31, 2, FAKE_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["result"]["workbench"]["status"], "completed");
    let pushed = git(
        &server.bare_path("src"),
        &["log", "-1", "--format=%s", "feature"],
    );
    assert_eq!(
        pushed, "agent commit",
        "the agent's push reached the server"
    );
    assert_eq!(
        upload_packs(&server),
        fetches_after_clone,
        "the follow-up fetched nothing: no second clone"
    );
    assert!(
        server
            .seen()
            .iter()
            .any(|r| r.target.contains("git-receive-pack")),
        "the push went through the git server"
    );
    assert!(
        repo.join(".git/executor-test-marker").exists(),
        "the follow-up reused the tree"
    );

    // Nowhere in logs or callbacks.
    let logs = exec.logs().join("\n");
    assert!(!logs.contains(TOKEN), "token in the executor's logs");
    let callbacks = serde_json::to_string(&rx.callbacks()).unwrap();
    assert!(!callbacks.contains(TOKEN), "token in callbacks");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_fails_clearly_and_the_task_stays_usable() {
    let server = GitServer::start("alice", TOKEN);
    server.create_repo("src", &[("README.md", "x\n")], &["feature"]);
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let wrong = "wrong-token-0815";
    post(&exec, &git_task(32, 1, &server.url("src"), wrong, "hello")).await;
    let done = rx.wait_terminal(32, 1, FAKE_WAIT).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let msg = done["error_message"].as_str().unwrap();
    assert!(
        msg.contains("Failed to clone") && msg.contains(&server.url("src")),
        "{msg}"
    );
    assert!(
        msg.to_lowercase().contains("authentication failed"),
        "git's reason is kept: {msg}"
    );
    assert!(!msg.contains(wrong), "{msg}");
    assert!(
        !exec.workspace().join("32/src").exists(),
        "no half clone left behind"
    );
    assert!(server.seen().iter().any(|r| r.status == 401));

    // The same task goes on: the right token — sent AES-encrypted, as the backend does — now
    // clones and runs.
    let encrypted = encrypt_like_the_backend(TOKEN);
    post(
        &exec,
        &git_task(32, 2, &server.url("src"), &encrypted, "again"),
    )
    .await;
    let done = rx.wait_terminal(32, 2, FAKE_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    // Subtask 2 of the same task finished: a duplicate terminal for 1 would have arrived.
    rx.assert_one_terminal_now(32, &[1, 2]);
    // No token in the task: the original's `~/.ssh/<domain>` token file is used.
    std::fs::create_dir_all(exec.home().join(".ssh")).unwrap();
    std::fs::write(exec.home().join(".ssh/127.0.0.1"), format!("{TOKEN}\n")).unwrap();
    let mut no_token = git_task(35, 1, &server.url("src"), "", "from the token file");
    no_token["user"]
        .as_object_mut()
        .unwrap()
        .remove("git_token");
    post(&exec, &no_token).await;
    let done = rx.wait_terminal(35, 1, FAKE_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");

    // A branch that would read as an option is refused before git runs.
    let mut evil = git_task(36, 1, &server.url("src"), TOKEN, "x");
    evil["branch_name"] = json!("--upload-pack=touch /tmp/pwned-by-branch");
    post(&exec, &evil).await;
    let done = rx.wait_terminal(36, 1, FAKE_WAIT).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert!(
        done["error_message"]
            .as_str()
            .unwrap()
            .contains("invalid branch name"),
        "{done}"
    );

    let logs = exec.logs().join("\n");
    assert!(!logs.contains(wrong) && !logs.contains(TOKEN));
}

/// AES-256-CBC/PKCS#7/base64 with the original's default key and IV.
fn encrypt_like_the_backend(plain: &str) -> String {
    use aes::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
    use base64::Engine as _;
    let enc = cbc::Encryptor::<aes::Aes256>::new_from_slices(
        b"12345678901234567890123456789012",
        b"1234567890123456",
    )
    .unwrap();
    base64::engine::general_purpose::STANDARD
        .encode(enc.encrypt_padded_vec_mut::<Pkcs7>(plain.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_clone_times_out_and_a_cancel_stops_a_clone() {
    let server = GitServer::start("alice", TOKEN);
    server.create_repo("src", &[("README.md", "x\n")], &["feature"]);
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("GIT_CLONE_TIMEOUT_SECS", "1")]).await;
    server.hold();
    post(&exec, &git_task(33, 1, &server.url("src"), TOKEN, "hello")).await;
    let done = rx.wait_terminal(33, 1, FAKE_WAIT).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert!(
        done["error_message"]
            .as_str()
            .unwrap()
            .contains("did not finish within 1 s"),
        "{done}"
    );

    // Cancel while the clone hangs: CANCELLED, no git process left, the task still works.
    // (The timed-out clone's request may still be parked: count from here.)
    let parked_before = server.held();
    post(&exec, &git_task(34, 1, &server.url("src"), TOKEN, "hello")).await;
    assert!(
        server
            .wait_held(parked_before + 1, Duration::from_secs(20))
            .await
    );
    let (status, body) = exec
        .post_json("/api/tasks/cancel?task_id=34", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let done = rx.wait_terminal(34, 1, FAKE_WAIT).await;
    assert_eq!(done["status"], "CANCELLED", "{done}");
    let url = server.url("src");
    let gone = wait_until(Duration::from_secs(10), || {
        !all_cmdlines()
            .iter()
            .any(|(p, c)| c.contains(&url) && descendants_of(exec.pid()).contains(p))
    })
    .await;
    assert!(
        gone,
        "a git process of the cancelled clone is still running"
    );
    server.release();
    post(
        &exec,
        &git_task(34, 2, &server.url("src"), TOKEN, "after cancel"),
    )
    .await;
    let done = rx.wait_terminal(34, 2, FAKE_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_and_skills_are_fetched_safely() {
    let auth = "jwt-SECRET-auth-token";
    let backend = Backend::start(auth);
    backend.add_attachment("7", b"attached notes\n".to_vec());
    backend.add_attachment("8", vec![b'x'; 5000]);
    backend.add_skill("pdf", zip_archive(&[("pdf/SKILL.md", b"# PDF skill")], &[]));
    backend.add_skill(
        "evil",
        zip_archive(
            &[("evil/SKILL.md", b"ok"), ("../../escaped.txt", b"pwned")],
            &[],
        ),
    );
    backend.add_skill(
        "linky",
        zip_archive(
            &[("linky/SKILL.md", b"ok")],
            &[("linky/passwd", "/etc/passwd")],
        ),
    );
    let rx = CallbackReceiver::start();
    let exec = start_fake(
        &rx,
        &[
            ("TASK_API_DOMAIN", &backend.base_url()),
            ("MAX_ATTACHMENT_BYTES", "1000"),
        ],
    )
    .await;
    let ws = exec.workspace().to_path_buf();
    let task = json!({
        "task_id": 41, "subtask_id": 5, "auth_token": auth,
        "bot": [{"shell_type": "ClaudeCode", "skills": ["pdf", "evil", "linky", "missing"]}],
        "attachments": [
            {"id": 7, "original_filename": "../notes\r\n.txt", "file_extension": ".txt",
             "file_size": 15, "mime_type": "text/plain"},
            {"id": 8, "original_filename": "big.bin", "file_size": 5000,
             "mime_type": "application/octet-stream"}],
        "prompt": "FAKE:prompt\nread [attachment:7] and [attachment:8]",
    });
    post(&exec, &task).await;
    let done = rx.wait_terminal(41, 5, FAKE_WAIT).await;
    assert_eq!(
        done["status"], "COMPLETED",
        "attachments never fail a task: {done}"
    );

    let dir = ws.join("41/41:executor:attachments/5");
    let saved = dir.join(".._notes.txt");
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), "attached notes\n");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![".._notes.txt".to_string()],
        "the oversized file is not kept"
    );

    let prompt = done["result"]["value"].as_str().unwrap();
    assert!(
        prompt.contains(&format!(
            "read [Attachment downloaded to: {}]",
            saved.display()
        )),
        "{prompt}"
    );
    assert!(
        prompt.contains("[Attachment 8 unavailable - download failed]"),
        "{prompt}"
    );
    assert!(
        prompt.contains("- big.bin (Error: larger than the limit of 1000 bytes)"),
        "{prompt}"
    );
    assert!(
        prompt.contains(&format!(
            "📎 Available attachments:\n- .._notes.txt (text/plain, 15 bytes): {}",
            saved.display()
        )),
        "{prompt}"
    );

    let skills = ws.join("41/.claude/skills");
    assert_eq!(
        std::fs::read_to_string(skills.join("pdf/SKILL.md")).unwrap(),
        "# PDF skill"
    );
    assert!(
        !skills.join("evil").exists(),
        "a zip-slip archive is refused as a whole"
    );
    assert!(
        !skills.join("linky").exists(),
        "an archive with a symlink is refused"
    );
    for p in [
        ws.join("escaped.txt"),
        ws.join("41/escaped.txt"),
        ws.join("41/.claude/escaped.txt"),
    ] {
        assert!(!p.exists(), "{} escaped the skills folder", p.display());
    }
    let notices: Vec<String> = done["result"]["thinking"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["title"] == "thinking.workspace_notice")
        .map(|s| s["details"]["message"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("evil") && n.contains("unsafe path")),
        "{notices:?}"
    );
    assert!(
        notices
            .iter()
            .any(|n| n.contains("linky") && n.contains("symlink")),
        "{notices:?}"
    );
    assert!(
        notices
            .iter()
            .any(|n| n.contains("missing") && n.contains("not found")),
        "{notices:?}"
    );
    assert!(backend
        .seen()
        .iter()
        .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {auth}"))));
    assert!(!exec.logs().join("\n").contains(auth), "auth token in logs");
    assert!(
        !serde_json::to_string(&rx.callbacks())
            .unwrap()
            .contains(auth),
        "auth token in callbacks"
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 18: transports, seed and URL credentials, custom AES key, half clones, skills settings,
// custom instruction files.
// ---------------------------------------------------------------------------------------------

/// Every git process among the executor's descendants whose command line names `needle`.
fn git_processes_of(exec: &Executor, needle: &str) -> Vec<(u32, String)> {
    let mine = descendants_of(exec.pid());
    all_cmdlines()
        .into_iter()
        .filter(|(p, c)| mine.contains(p) && c.contains(needle))
        .collect()
}

/// The entries of `dir` (names), sorted; empty when it does not exist.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_off_the_allow_list_is_refused_and_an_allowed_one_clones() {
    let server = GitServer::start("alice", TOKEN);
    server.create_repo("src", &[("README.md", "x\n")], &["feature"]);
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;
    let ws = exec.workspace().to_path_buf();
    // `ext::` runs a command of the URL's choosing: here it would create `marker`.
    let marker = exec.tmp_root().join("ext-transport-ran");
    let url = format!("ext::touch {}", marker.display());
    let mut task = git_task(37, 1, &url, TOKEN, "hello");
    task["branch_name"] = Value::Null;
    post(&exec, &task).await;
    let done = rx.wait_terminal(37, 1, FAKE_WAIT).await;
    assert_eq!(done["status"], "FAILED", "{done}\n{}", exec.logs_tail(30));
    let msg = done["error_message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("Failed to clone") && msg.contains("transport 'ext' not allowed"),
        "a clear reason: {msg}"
    );
    assert!(
        !marker.exists(),
        "the ext:: transport ran its command: {msg}"
    );
    let task_dir = ws.join("37");
    let left: Vec<String> = entries(&task_dir)
        .into_iter()
        .filter(|n| n != ".executor")
        .collect();
    assert!(left.is_empty(), "no clone dir left behind: {left:?}");

    // The same task, over an allowed transport (http): clones and runs.
    post(&exec, &git_task(37, 2, &server.url("src"), TOKEN, "again")).await;
    let done = rx.wait_terminal(37, 2, FAKE_WAIT).await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{done}\n{}",
        exec.logs_tail(30)
    );
    assert_eq!(
        git(
            &task_dir.join("src"),
            &["rev-parse", "--abbrev-ref", "HEAD"]
        ),
        "feature"
    );
    rx.assert_one_terminal_now(37, &[1, 2]);
}

/// Asserts `secret` (and its percent-encoded form) is in no callback, log line, `.git/config`
/// or file of the workspace.
fn assert_secret_nowhere(exec: &Executor, rx: &CallbackReceiver, secret: &str, repo: &Path) {
    let encoded: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let callbacks = serde_json::to_string(&rx.callbacks()).unwrap();
    let logs = exec.logs().join("\n");
    let config = config_of(repo);
    for form in [secret, encoded.as_str()] {
        assert!(!callbacks.contains(form), "{form} in callbacks");
        assert!(!logs.contains(form), "{form} in the executor's logs");
        assert!(!config.contains(form), "{form} in .git/config:\n{config}");
        for entry in walk(exec.workspace()) {
            let body = std::fs::read(&entry).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&body).contains(form),
                "{form} written to {}",
                entry.display()
            );
        }
    }
}

/// Holds the git server, posts `task`, checks no process carries `secret` while the clone is
/// in flight, releases it and returns the terminal callback.
async fn clone_held(
    exec: &Executor,
    rx: &CallbackReceiver,
    server: &GitServer,
    task: &Value,
    secret: &str,
) -> Value {
    server.hold();
    post(exec, task).await;
    assert!(
        server.wait_held(1, Duration::from_secs(20)).await,
        "the clone never reached the git server\n{}",
        exec.logs_tail(40)
    );
    let url = server.url("src");
    let host_port = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        !git_processes_of(exec, &host_port).is_empty(),
        "no git process seen during the clone: {:?}",
        all_cmdlines()
    );
    let leaking: Vec<_> = all_cmdlines()
        .into_iter()
        .filter(|(_, c)| c.contains(secret))
        .collect();
    server.release();
    assert!(
        leaking.is_empty(),
        "secret in process arguments: {leaking:?}"
    );
    let (t, s) = (
        json_i64(&task["task_id"]).unwrap(),
        json_i64(&task["subtask_id"]).unwrap(),
    );
    rx.wait_terminal(t, s, FAKE_WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_username_and_password_and_url_credentials_clone_and_leak_nowhere() {
    // A password with characters that must be percent-encoded inside a URL.
    const PASSWORD: &str = "s33d-P@ss/w0rd";
    let server = GitServer::start("bob", PASSWORD);
    server.create_repo("src", &[("README.md", "seed repo\n")], &[]);
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[]).await;

    // The seed's shape: `repo_url`, `git_username`, `git_password`.
    let seed = json!({"task_id": 38, "subtask_id": 1, "agent_type": "claude_code",
                      "content": "hello", "repo_url": server.url("src"),
                      "git_username": "bob", "git_password": PASSWORD});
    let done = clone_held(&exec, &rx, &server, &seed, PASSWORD).await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{done}\n{}",
        exec.logs_tail(40)
    );
    let repo = exec.workspace().join("38/src");
    assert_eq!(
        std::fs::read_to_string(repo.join("README.md")).unwrap(),
        "seed repo\n"
    );
    assert!(
        server
            .seen()
            .iter()
            .any(|r| r.status == 200 && r.authorization.is_some()),
        "the clone authenticated"
    );

    // Credentials inside the URL: taken out of it, used, written nowhere.
    let encoded = PASSWORD.replace('@', "%40").replace('/', "%2F");
    let url = server
        .url("src")
        .replacen("http://", &format!("http://bob:{encoded}@"), 1);
    let task = json!({"task_id": 39, "subtask_id": 1, "prompt": "FAKE:prompt\nhi",
                      "git_url": url, "bot": [{"shell_type": "ClaudeCode"}]});
    let done = clone_held(&exec, &rx, &server, &task, &encoded).await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{done}\n{}",
        exec.logs_tail(40)
    );
    let repo2 = exec.workspace().join("39/src");
    assert_eq!(
        git(&repo2, &["remote", "get-url", "origin"]),
        server.url("src"),
        "the remote is the clean URL"
    );
    assert!(
        !all_cmdlines()
            .iter()
            .any(|(_, c)| c.contains(PASSWORD) || c.contains(&encoded)),
        "secret in process arguments after the clone"
    );
    assert_secret_nowhere(&exec, &rx, PASSWORD, &repo);
    assert_secret_nowhere(&exec, &rx, PASSWORD, &repo2);
}

/// AES-256-CBC/PKCS#7/base64 with `key` and `iv`.
fn encrypt_with(plain: &str, key: &[u8], iv: &[u8]) -> String {
    use aes::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
    use base64::Engine as _;
    let enc = cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv).unwrap();
    base64::engine::general_purpose::STANDARD
        .encode(enc.encrypt_padded_vec_mut::<Pkcs7>(plain.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_aes_key_decrypts_the_token_and_a_wrong_key_fails_clearly() {
    const KEY: &str = "custom-aes-key-0123456789abcdef!";
    const IV: &str = "custom-iv-000042";
    let server = GitServer::start("alice", TOKEN);
    server.create_repo("src", &[("README.md", "x\n")], &["feature"]);
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("GIT_TOKEN_AES_KEY", KEY), ("GIT_TOKEN_AES_IV", IV)]).await;

    let right = encrypt_with(TOKEN, KEY.as_bytes(), IV.as_bytes());
    post(&exec, &git_task(61, 1, &server.url("src"), &right, "hello")).await;
    let done = rx.wait_terminal(61, 1, FAKE_WAIT).await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{done}\n{}",
        exec.logs_tail(40)
    );
    assert!(exec.workspace().join("61/src/README.md").exists());

    // Encrypted with another key (the original's default): not decryptable here, so git gets
    // the ciphertext and the server refuses it.
    let wrong = encrypt_with(
        TOKEN,
        actors::crypto::DEFAULT_KEY.as_bytes(),
        actors::crypto::DEFAULT_IV.as_bytes(),
    );
    post(&exec, &git_task(62, 1, &server.url("src"), &wrong, "hello")).await;
    let done = rx.wait_terminal(62, 1, FAKE_WAIT).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let msg = done["error_message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("Failed to clone") && msg.to_lowercase().contains("authentication failed"),
        "{msg}"
    );
    assert!(!exec.workspace().join("62/src").exists(), "no half clone");
    let callbacks = serde_json::to_string(&rx.callbacks()).unwrap();
    let logs = exec.logs().join("\n");
    for secret in [KEY, IV, wrong.as_str(), right.as_str(), TOKEN] {
        assert!(!callbacks.contains(secret), "{secret} in callbacks");
        assert!(!logs.contains(secret), "{secret} in logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_timeout_leaves_no_half_clone_and_no_git_process() {
    let server = GitServer::start("alice", TOKEN);
    server.create_repo("src", &[("README.md", "x\n")], &["feature"]);
    let rx = CallbackReceiver::start();
    let exec = start_fake(&rx, &[("GIT_CLONE_TIMEOUT_SECS", "4")]).await;
    let task_dir = exec.workspace().join("63");
    // The server holds the clone's requests: git has made its directory and waits.
    server.hold();
    post(&exec, &git_task(63, 1, &server.url("src"), TOKEN, "hello")).await;
    assert!(server.wait_held(1, Duration::from_secs(20)).await);
    let url = server.url("src");
    assert!(
        !git_processes_of(&exec, &url).is_empty(),
        "the clone runs while the server holds it"
    );
    let started = entries(&task_dir);
    assert!(
        started.iter().any(|n| n != ".executor"),
        "the clone in flight has a directory (what must not be left): {started:?}"
    );
    let done = rx.wait_terminal(63, 1, FAKE_WAIT).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert!(
        done["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("did not finish within 4 s"),
        "{done}"
    );
    let gone = wait_until(Duration::from_secs(10), || {
        git_processes_of(&exec, &url).is_empty()
    })
    .await;
    assert!(
        gone,
        "git processes of the timed-out clone: {:?}",
        git_processes_of(&exec, &url)
    );
    assert!(
        zombie_children_of(exec.pid()).is_empty(),
        "zombies: {:?}",
        zombie_children_of(exec.pid())
    );
    let left: Vec<String> = entries(&task_dir)
        .into_iter()
        .filter(|n| n != ".executor")
        .collect();
    assert!(left.is_empty(), "half clone left behind: {left:?}");
    server.release();
    post(
        &exec,
        &git_task(63, 2, &server.url("src"), TOKEN, "after the timeout"),
    )
    .await;
    let done = rx.wait_terminal(63, 2, FAKE_WAIT).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(task_dir.join("src/README.md").exists());
}

/// Bytes that do not compress (so a ZIP of them is about as large).
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn skill_task(task_id: i64, subtask_id: i64, auth: &str, skills: &[&str]) -> Value {
    json!({"task_id": task_id, "subtask_id": subtask_id, "auth_token": auth,
           "bot": [{"shell_type": "ClaudeCode", "skills": skills}], "prompt": "hi"})
}

fn downloads_of(backend: &Backend, name: &str) -> usize {
    let path = format!("/api/v1/kinds/skills/id-{name}/download");
    backend
        .seen()
        .iter()
        .filter(|r| r.target.starts_with(&path))
        .count()
}

fn notices_of(done: &Value) -> Vec<String> {
    done["result"]["thinking"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["title"] == "thinking.workspace_notice")
        .map(|s| s["details"]["message"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skill_over_max_skill_bytes_is_refused_and_nothing_partial_is_left() {
    let auth = "jwt-skills-token";
    let backend = Backend::start(auth);
    backend.add_skill("small", zip_archive(&[("small/SKILL.md", b"# small")], &[]));
    let big = noise(64 * 1024);
    backend.add_skill(
        "big",
        zip_archive(&[("big/SKILL.md", b"# big"), ("big/blob", &big)], &[]),
    );
    let rx = CallbackReceiver::start();
    let exec = start_fake(
        &rx,
        &[
            ("TASK_API_DOMAIN", &backend.base_url()),
            ("MAX_SKILL_BYTES", "16384"),
        ],
    )
    .await;
    post(&exec, &skill_task(64, 1, auth, &["big", "small"])).await;
    let done = rx.wait_terminal(64, 1, FAKE_WAIT).await;
    assert_eq!(
        done["status"], "COMPLETED",
        "a skill never fails the task: {done}"
    );
    let notices = notices_of(&done);
    assert!(
        notices
            .iter()
            .any(|n| n.contains("big") && n.contains("larger than the limit of 16384 bytes")),
        "{notices:?}"
    );
    assert_eq!(
        downloads_of(&backend, "big"),
        1,
        "the download was attempted"
    );
    let skills = exec.workspace().join("64/.claude/skills");
    assert_eq!(
        entries(&skills),
        vec!["small".to_string()],
        "only the small skill, no partial download or unpack of the big one"
    );
    assert_eq!(
        std::fs::read_to_string(skills.join("small/SKILL.md")).unwrap(),
        "# small"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skill_clear_cache_wipes_the_skills_folder_and_off_keeps_cached_skills() {
    let auth = "jwt-skills-token";
    let backend = Backend::start(auth);
    backend.add_skill("pdf", zip_archive(&[("pdf/SKILL.md", b"# pdf")], &[]));
    backend.add_skill("old", zip_archive(&[("old/SKILL.md", b"# old")], &[]));
    for (clear, task_id) in [(None, 65), (Some("false"), 66)] {
        let rx = CallbackReceiver::start();
        let mut env = vec![("TASK_API_DOMAIN", backend.base_url())];
        if let Some(v) = clear {
            env.push(("SKILL_CLEAR_CACHE", v.to_string()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let exec = start_fake(&rx, &env).await;
        let skills = exec.workspace().join(format!("{task_id}/.claude/skills"));
        let (pdf0, old0) = (downloads_of(&backend, "pdf"), downloads_of(&backend, "old"));
        post(&exec, &skill_task(task_id, 1, auth, &["pdf", "old"])).await;
        let done = rx.wait_terminal(task_id, 1, FAKE_WAIT).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(entries(&skills), vec!["old".to_string(), "pdf".to_string()]);
        // Something left in the cache by an earlier run.
        std::fs::write(skills.join("pdf/stale.txt"), "stale").unwrap();
        post(&exec, &skill_task(task_id, 2, auth, &["pdf"])).await;
        let done = rx.wait_terminal(task_id, 2, FAKE_WAIT).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(
            downloads_of(&backend, "pdf") - pdf0,
            2,
            "a listed skill is downloaded for each subtask (clear={clear:?})"
        );
        assert_eq!(
            downloads_of(&backend, "old") - old0,
            1,
            "a skill not listed is never fetched again (clear={clear:?})"
        );
        assert_eq!(
            std::fs::read_to_string(skills.join("pdf/SKILL.md")).unwrap(),
            "# pdf"
        );
        assert!(
            !skills.join("pdf/stale.txt").exists(),
            "a re-deployed skill is replaced whole"
        );
        if clear.is_none() {
            assert_eq!(
                entries(&skills),
                vec!["pdf".to_string()],
                "SKILL_CLEAR_CACHE (default true) wipes the folder before deploying"
            );
        } else {
            assert_eq!(
                entries(&skills),
                vec!["old".to_string(), "pdf".to_string()],
                "SKILL_CLEAR_CACHE=false keeps the cached skill without fetching it again"
            );
            assert_eq!(
                std::fs::read_to_string(skills.join("old/SKILL.md")).unwrap(),
                "# old"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_instruction_files_decide_what_the_cli_finds_in_claudecode() {
    let server = GitServer::start("alice", TOKEN);
    server.create_repo(
        "src",
        &[
            ("README.md", "x\n"),
            (".cursorrules", "default rules\n"),
            ("team-rules.md", "team rules\n"),
            ("docs/style.md", "style guide\n"),
        ],
        &["feature"],
    );
    let rx = CallbackReceiver::start();
    let exec = start_fake(
        &rx,
        &[(
            "CUSTOM_INSTRUCTION_FILES",
            "team-rules.md, docs/style.md,missing.md,../README.md,/etc/hostname",
        )],
    )
    .await;
    // What the CLI sees from its working directory, written where the test can read it.
    let seen = exec.tmp_root().join("cli-saw.txt");
    let prompt = format!(
        "FAKE:sh:ls -A .claudecode > {0} && cat .claudecode/* >> {0} && git status --porcelain >> {0}\nhi",
        seen.display()
    );
    post(&exec, &git_task(67, 1, &server.url("src"), TOKEN, &prompt)).await;
    let done = rx.wait_terminal(67, 1, FAKE_WAIT).await;
    assert_eq!(
        done["status"],
        "COMPLETED",
        "{done}\n{}",
        exec.logs_tail(40)
    );
    let saw = std::fs::read_to_string(&seen).unwrap_or_else(|e| panic!("{e}: {}", rx.dump()));
    assert_eq!(
        saw, "style.md\nteam-rules.md\nstyle guide\nteam rules\n",
        "exactly the listed files that exist (not the default .cursorrules, nothing outside \
         the repository), and nothing shows up in git status"
    );
}
