//! The dashboard's Settings > Audit Log page, driven in headless Chromium through WebDriver
//! (chromedriver) against the real collector: sign-in, role refusal, filters and counts checked
//! against the API, cursor paging, the details panel with old → new values, untrusted text kept
//! as text, export and the retention panel. Saves `target/test-artifacts/dashboard*.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); without them the
//! browser test prints SKIPPED and returns. `CHROMIUM` and `CHROMEDRIVER` override the paths.

use crate::streams::{HEADER_SECRET, HttpsReceiver, SECRET};
use chrono::{Duration as Days, SecondsFormat, Utc};
use codestax_tests::{Collector, free_port, record};
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ORG: &str = "acme";
const ACTIONS: &[&str] = &[
    "auth.login",
    "auth.api_key_created",
    "repository.connected",
    "scan.triggered",
    "scan.completed",
    "finding.triaged",
    "team.role_changed",
    "settings.webhook_configured",
    "integration.jira_linked",
];
const USERS: &[(&str, &str)] = &[
    ("Ada Lovelace", "ada@acme.example"),
    ("Bob Byte", "bob@acme.example"),
    ("Cy Cipher", "cy@acme.example"),
];
const REPOS: &[&str] = &["acme/api", "acme/web", "acme/infra"];
/// Shown as text, never parsed as markup.
const HOSTILE: &str = "<img src=x onerror=\"document.title='pwned'\"> policy <b>bold</b>";

fn days_ago(days: i64, minutes: i64) -> String {
    (Utc::now() - Days::days(days) - Days::minutes(minutes))
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn date_ago(days: i64) -> String {
    (Utc::now() - Days::days(days))
        .format("%Y-%m-%d")
        .to_string()
}

/// 135 records of `acme` spread over 2 to 29 days ago, every category but the audit log's own,
/// and one settings change with old → new values and a hostile message.
fn corpus() -> Vec<Value> {
    let mut records: Vec<Value> = (0..135)
        .map(|i: usize| {
            let (name, email) = USERS[(i / 3) % USERS.len()];
            let repo = REPOS[(i / 5) % REPOS.len()];
            let mut r = record(
                ORG,
                &format!("rec-{i:03}"),
                ACTIONS[i % ACTIONS.len()],
                email,
                &days_ago(2 + (i as i64 * 7) % 28, i as i64),
            );
            r["actor"]["name"] = json!(name);
            r["repository"] = json!(repo);
            r["target"]["name"] = json!(repo);
            r["metadata"]["ip"] = json!(format!("198.51.100.{}", i % 250));
            r
        })
        .collect();
    let mut change = record(
        ORG,
        "policy-change",
        "settings.policy_changed",
        "ada@acme.example",
        &days_ago(5, 30),
    );
    change["actor"]["name"] = json!("Ada Lovelace");
    change["target"] = json!({"kind": "policy", "id": "pol-7", "name": "Default scan policy"});
    change["message"] = json!(HOSTILE);
    change["metadata"] = json!({
        "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "changes": [
            {"field": "require_2fa", "old": false, "new": true},
            {"field": "min_severity", "old": "low", "new": "high"}
        ],
        "ticket": "SEC-42"
    });
    records.push(change);
    // A target with a long unbroken name: the table must still show every column whole.
    let mut long = record(
        ORG,
        "long-target",
        "settings.webhook_configured",
        "bob@acme.example",
        &days_ago(3, 1),
    );
    long["target"] = json!({"kind": "webhook", "id": "wh-1",
        "name": format!("https://hooks.example.com/{}", "x".repeat(140))});
    long["metadata"]["ip"] = json!("2001:db8:85a3:0000:0000:8a2e:0370:7334");
    records.push(long);
    // Today: outside the date range the browser test picks.
    records.push(record(
        ORG,
        "today",
        "scan.failed",
        "cy@acme.example",
        &days_ago(0, 5),
    ));
    records
}

/// Streams may reach the test's receiver on loopback; one stream is declared in the
/// configuration (read-only in the panel), aimed at a port nothing listens on.
fn start_collector(dir: &Path) -> Collector {
    Collector::start(
        &dir.join("data"),
        &format!(
            "[[orgs]]\nid = \"acme\"\nplan = \"enterprise\"\n\
             [streams]\nallow_destinations = [\"127.0.0.1\"]\n\
             [[streams.declared]]\norg = \"{ORG}\"\nid = \"ops-syslog\"\nname = \"ops\"\n\
             [streams.declared.destination]\nkind = \"syslog\"\naddress = \"127.0.0.1:{}\"\n",
            free_port()
        ),
    )
}

/// The page, its assets and `whoami`, over plain HTTP: no browser needed.
#[test]
fn page_is_served_with_a_strict_policy_and_whoami_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_collector(dir.path());
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = http.get(c.url("/")).send().unwrap();
    assert!(root.status().is_redirection(), "{}", root.status());
    assert_eq!(root.headers()["location"], "/settings/audit-log");

    for (path, content_type) in [
        ("/settings/audit-log", "text/html; charset=utf-8"),
        ("/dashboard/audit-log.js", "text/javascript; charset=utf-8"),
        ("/dashboard/dashboard.css", "text/css; charset=utf-8"),
        ("/dashboard/favicon.svg", "image/svg+xml"),
    ] {
        let r = http.get(c.url(path)).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], content_type, "{path}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }

    for role in ["ORG_ADMIN", "ORG_OWNER", "MEMBER", "INGEST"] {
        let token = c.create_key(ORG, role);
        let who = c.get_json("/api/v1/whoami", &token);
        assert_eq!(who["org_id"], ORG);
        assert_eq!(who["role"], role);
        assert!(who["key_id"].as_str().unwrap().starts_with("key_"), "{who}");
        assert!(who.get("name").is_some(), "{who}");
        assert!(!who.to_string().contains(&token), "never the token");
    }
    let r = http.get(c.url("/api/v1/whoami")).send().unwrap();
    assert_eq!(r.status(), 401, "whoami needs a key");
}

// ---------- the browser ----------

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            ["chromium", "chromium-browser"]
                .into_iter()
                .find_map(on_path)
        })?;
    let driver = std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| on_path("chromedriver"))?;
    Some((chromium, driver))
}

/// `target/test-artifacts`, beside the profile directories.
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>
    let target = exe.ancestors().nth(3).expect("target dir");
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A chromedriver process on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(path: &Path) -> Driver {
        let port = free_port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = reqwest::blocking::get(format!("http://127.0.0.1:{port}/status"))
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver not ready in 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs blocking harness calls (reqwest::blocking) from inside the browser's async code.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn js(b: &Client, script: &str, args: Vec<Value>) -> Value {
    b.execute(script, args)
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// Polls `check` until it gives `Some`, for up to 20 s; panics naming `what` and the last value.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}; last: {last}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn text_of(b: &Client, id: &str) -> String {
    js(
        b,
        "const e = document.getElementById(arguments[0]); return e ? e.textContent : null;",
        vec![json!(id)],
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_string()
}

async fn wait_text(b: &Client, id: &str, want: impl Fn(&str) -> bool) -> String {
    wait_for(&format!("#{id}"), || async {
        let t = text_of(b, id).await;
        if want(&t) { Ok(t) } else { Err(t) }
    })
    .await
}

async fn visible(b: &Client, id: &str) -> bool {
    b.find(Locator::Id(id))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap()
}

async fn wait_visible(b: &Client, id: &str) {
    wait_for(&format!("#{id} to show"), || async {
        if visible(b, id).await {
            Ok(())
        } else {
            Err("hidden".to_string())
        }
    })
    .await
}

/// Sets a form control's value and fires `change`, as a person choosing a value does. (Typing
/// into `<input type=date>` depends on the browser's locale, so dates are set this way.)
async fn set_value(b: &Client, id: &str, value: &str) {
    js(
        b,
        "const e = document.getElementById(arguments[0]); e.value = arguments[1]; \
         e.dispatchEvent(new Event('change', {bubbles: true}));",
        vec![json!(id), json!(value)],
    )
    .await;
}

/// The entries shown: `[id, time, user, action, target, repository, ip]` per row.
async fn rows(b: &Client) -> Vec<Vec<String>> {
    let v = js(
        b,
        "return Array.from(document.querySelectorAll('#entries-body tr.entry')).map(r => \
           [r.dataset.id].concat(Array.from(r.cells).slice(0, 6).map(c => c.innerText.trim())));",
        vec![],
    )
    .await;
    serde_json::from_value(v).unwrap()
}

/// The lines once the page is not loading (any number).
async fn settled_rows(b: &Client) -> Vec<Vec<String>> {
    wait_for("the rows", || async {
        let r = rows(b).await;
        let busy = js(
            b,
            "return document.querySelector('.results').hasAttribute('aria-busy');",
            vec![],
        )
        .await;
        if !r.is_empty() && busy == false {
            Ok(r)
        } else {
            Err(format!("{} rows, busy {busy}", r.len()))
        }
    })
    .await
}

async fn wait_rows(b: &Client, n: usize) -> Vec<Vec<String>> {
    wait_for(&format!("{n} rows"), || async {
        let r = rows(b).await;
        let busy = js(
            b,
            "return document.querySelector('.results').hasAttribute('aria-busy');",
            vec![],
        )
        .await;
        if r.len() == n && busy == false {
            Ok(r)
        } else {
            Err(format!("{} rows, busy {busy}", r.len()))
        }
    })
    .await
}

async fn screenshot(b: &Client, name: &str) -> PathBuf {
    let png = b.screenshot().await.expect("screenshot");
    let path = artifacts_dir().join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
    path
}

async fn sign_in(b: &Client, token: &str) {
    wait_visible(b, "signin-view").await;
    let input = b.find(Locator::Id("api-key")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(token).await.unwrap();
    click(b, Locator::Id("signin-button")).await;
}

async fn sign_out(b: &Client) {
    click(b, Locator::Id("sign-out")).await;
    wait_visible(b, "signin-view").await;
    let stored = js(b, "return sessionStorage.length;", vec![]).await;
    assert_eq!(stored, 0, "signing out forgets the key");
}

/// Records the page's fetches (URL and Authorization header) so a test can check what it asked.
async fn record_fetches(b: &Client) {
    js(
        b,
        "window.__fetches = []; const real = window.fetch; \
         window.fetch = (url, opts) => { \
           window.__fetches.push({url: String(url), auth: (opts && opts.headers && opts.headers.Authorization) || null}); \
           return real(url, opts); };",
        vec![],
    )
    .await;
}

async fn fetches(b: &Client) -> Vec<(String, Option<String>)> {
    let v = js(b, "return window.__fetches || [];", vec![]).await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["url"].as_str().unwrap().to_string(),
                f["auth"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn query_pairs(url: &str) -> BTreeMap<String, Vec<String>> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(k.to_string()).or_default().push(v.to_string());
    }
    out
}

fn ids(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn facet_counts(facets: &Value, field: &str) -> BTreeMap<String, u64> {
    facets[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["value"].as_str().unwrap().to_string(),
                f["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// A finished download in `dir` (Chromium writes `*.crdownload` until done).
async fn wait_download(dir: &Path) -> PathBuf {
    wait_for("a finished download", || async {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        // Chromium writes a download first to a hidden `.org.chromium.Chromium.*` file, then
        // to `*.crdownload`, then renames it to its name: only the last is finished.
        let done: Vec<&PathBuf> = files
            .iter()
            .filter(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                !name.starts_with('.') && !name.ends_with(".crdownload")
            })
            .collect();
        match done.as_slice() {
            [one] if files.len() == 1 => Ok((*one).clone()),
            _ => Err(format!("{files:?}")),
        }
    })
    .await
}

#[test]
fn audit_log_page_in_headless_chromium() {
    let Some((chromium, chromedriver)) = browser_tools() else {
        eprintln!(
            "\n==========================================================================\n\
             SKIPPED: chromium/chromedriver not installed (apt-get install -y chromium chromium-driver)\n\
             ==========================================================================\n"
        );
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let c = start_collector(dir.path());
    // Key creations are recorded too (now), so count the corpus up to yesterday, taken before
    // the keys and the corpus are made: a midnight passing between them and this once made the
    // corpus's "today" record yesterday's.
    let until_yesterday = format!("until={}", date_ago(1));
    let ingest = c.create_key(ORG, "INGEST");
    let admin = c.create_key(ORG, "ORG_ADMIN");
    let member = c.create_key(ORG, "MEMBER");
    let owner = c.create_key(ORG, "ORG_OWNER");
    let records = corpus();
    let (status, body) = c.ingest(&ingest, &records);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], records.len());
    c.wait_for_total(ORG, &until_yesterday, &admin, records.len() as u64 - 1);

    // The streams panel's destination: its own runtime, started and dropped outside the browser's.
    std::fs::create_dir_all(dir.path().join("receiver")).unwrap();
    let receiver = HttpsReceiver::start(&dir.path().join("receiver"));
    let driver = Driver::start(&chromedriver);
    let downloads = dir.path().join("downloads");
    let profile = dir.path().join("chromium-profile");
    std::fs::create_dir_all(&downloads).unwrap();
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--lang=en-US",
                "--window-size=1366,768",
                format!("--user-data-dir={}", profile.display()),
            ],
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false,
                "download.directory_upgrade": true,
                "safebrowsing.enabled": false,
            },
        },
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a chromedriver session");
        let result = drive(&b, &c, &admin, &member, &owner, &downloads, &receiver).await;
        b.close().await.ok();
        result
    });
    eprintln!(
        "dashboard browser test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn drive(
    b: &Client,
    c: &Collector,
    admin: &str,
    member: &str,
    owner: &str,
    downloads: &Path,
    receiver: &HttpsReceiver,
) {
    let base = format!("/api/v1/orgs/{ORG}");
    b.goto(&c.url("/")).await.unwrap();
    let url = b.current_url().await.unwrap();
    assert_eq!(url.path(), "/settings/audit-log", "/ redirects to the page");
    assert!(b.title().await.unwrap().contains("Audit Log"));

    // A wrong key, then a MEMBER key: refused with a clear message.
    sign_in(b, "csk_not_a_real_key").await;
    wait_text(b, "signin-error", |t| t.contains("not accepted")).await;
    let focused = js(b, "return document.activeElement.id;", vec![]).await;
    assert_eq!(focused, "api-key", "focus back on the key field");
    screenshot(b, "dashboard-signin.png").await;
    sign_in(b, member).await;
    wait_visible(b, "denied-view").await;
    let denied = text_of(b, "denied-message").await;
    assert!(
        denied.contains("ORG_ADMIN and ORG_OWNER") && denied.contains("MEMBER"),
        "{denied}"
    );
    assert!(!visible(b, "log-view").await, "no log for a MEMBER");
    screenshot(b, "dashboard-member-refused.png").await;
    click(b, Locator::Id("denied-sign-out")).await;

    // ORG_ADMIN: the log, newest first.
    sign_in(b, admin).await;
    wait_visible(b, "log-view").await;
    assert_eq!(text_of(b, "org-name").await, ORG);
    wait_text(b, "result-count", |t| t.starts_with("Showing 50 of")).await;
    // The harness's own searches are views of this key: grouped, so fewer lines than entries.
    let first = settled_rows(b).await;
    assert!(
        first[0][1].ends_with(" UTC"),
        "times in UTC: {}",
        first[0][1]
    );
    assert!(
        first.windows(2).all(|w| w[0][1] >= w[1][1]),
        "newest first: {first:?}"
    );
    assert!(first.iter().any(|r| r[0] == "today"), "{first:?}");
    let who = text_of(b, "session-who").await;
    assert!(who.contains("ORG_ADMIN") && who.contains(ORG), "{who}");

    // Date range: 29 days ago to 2 days ago (inclusive), in UTC.
    let (since, until) = (date_ago(29), date_ago(2));
    let range = format!("since={since}&until={until}");
    set_value(b, "f-since", &since).await;
    set_value(b, "f-until", &until).await;
    let expected = blocking(|| c.search_all(ORG, &range, admin));
    assert!(expected.len() > 50, "enough records to page");
    wait_text(b, "result-count", |t| {
        t == format!("Showing 50 of {} entries", expected.len())
    })
    .await;
    let shown = wait_rows(b, 50).await;
    let shown_ids: Vec<String> = shown.iter().map(|r| r[0].clone()).collect();
    assert_eq!(shown_ids, ids(&expected[..50]), "first page as the API");

    // Facet counts beside the action types equal the API's.
    let facets = blocking(|| c.get_json(&format!("{base}/audit-log/facets?{range}"), admin));
    let api_categories = facet_counts(&facets, "categories");
    let page_categories = category_counts(b).await;
    for (category, count) in &page_categories {
        let want = api_categories.get(category).copied().unwrap_or(0);
        assert_eq!(*count, want, "count beside {category}");
    }
    assert_eq!(page_categories.len(), 8, "all the spec's categories");

    // Load more: the next page by cursor.
    click(b, Locator::Id("load-more")).await;
    let shown = wait_rows(b, expected.len().min(100)).await;
    let shown_ids: Vec<String> = shown.iter().map(|r| r[0].clone()).collect();
    assert_eq!(
        shown_ids,
        ids(&expected[..expected.len().min(100)]),
        "two pages as the API"
    );

    // Action type: Scans. Rows and counts as the API's.
    click(b, Locator::Css("label[for='f-category-scan']")).await;
    let scans = blocking(|| c.search_all(ORG, &format!("category=scan&{range}"), admin));
    assert!(!scans.is_empty() && scans.len() <= 50);
    wait_text(b, "result-count", |t| {
        t == format!("Showing {0} of {0} entries", scans.len())
    })
    .await;
    let shown = wait_rows(b, scans.len()).await;
    assert_eq!(
        shown.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        ids(&scans)
    );
    for (row, entry) in shown.iter().zip(&scans) {
        assert!(row[3].starts_with("scan."), "{row:?}");
        assert!(row[2].contains(entry["actor"]["email"].as_str().unwrap()));
        assert_eq!(row[5], entry["repository"].as_str().unwrap());
        assert_eq!(row[6], entry["metadata"]["ip"].as_str().unwrap());
    }
    assert!(!visible(b, "load-more").await, "one page only");
    // Counts beside the users are those of the scans in range; the action-type counts leave
    // their own choice out, so they stay as before.
    let scan_facets = blocking(|| {
        c.get_json(
            &format!("{base}/audit-log/facets?category=scan&{range}"),
            admin,
        )
    });
    wait_for("user counts for scans", || async {
        let options = select_options(b, "f-user").await;
        let want: Vec<String> = std::iter::once("All users".to_string())
            .chain(
                scan_facets["users"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| format!("{} ({})", f["value"].as_str().unwrap(), f["count"])),
            )
            .collect();
        if options == want {
            Ok(())
        } else {
            Err(format!("{options:?} != {want:?}"))
        }
    })
    .await;
    assert_eq!(category_counts(b).await, page_categories);

    // Repository filter on top: scans of acme/web.
    b.find(Locator::Id("f-repository"))
        .await
        .unwrap()
        .select_by_value("acme/web")
        .await
        .unwrap();
    let web_scans = blocking(|| {
        c.search_all(
            ORG,
            &format!("category=scan&repository=acme%2Fweb&{range}"),
            admin,
        )
    });
    wait_text(b, "result-count", |t| {
        t == format!("Showing {0} of {0} entries", web_scans.len())
    })
    .await;
    let shown = wait_rows(b, web_scans.len()).await;
    assert!(shown.iter().all(|r| r[5] == "acme/web"), "{shown:?}");

    // Settings instead: the change with its old → new values, and the hostile text as text.
    set_value(b, "f-repository", "").await;
    click(b, Locator::Css("label[for='f-category-scan']")).await;
    click(b, Locator::Css("label[for='f-category-settings']")).await;
    let settings = blocking(|| c.search_all(ORG, &format!("category=settings&{range}"), admin));
    wait_text(b, "result-count", |t| {
        t == format!("Showing {0} of {0} entries", settings.len())
    })
    .await;
    wait_rows(b, settings.len()).await;
    let toggle = b
        .find(Locator::Css(
            "tr.entry[data-id='policy-change'] button.details-toggle",
        ))
        .await
        .unwrap();
    // Keyboard: focus the button and press Enter.
    js(
        b,
        "document.querySelector(\"tr.entry[data-id='policy-change'] button\").focus();",
        vec![],
    )
    .await;
    toggle.send_keys("\u{E007}").await.unwrap();
    let details = wait_for("the details panel", || async {
        let v = js(
            b,
            "const r = document.querySelector(\"tr.entry[data-id='policy-change']\").nextElementSibling; \
             return r.hidden ? null : r.innerText;",
            vec![],
        )
        .await;
        v.as_str().map(str::to_string).ok_or_else(|| "closed".to_string())
    })
    .await;
    assert_eq!(
        toggle.attr("aria-expanded").await.unwrap().as_deref(),
        Some("true")
    );
    let changes = js(
        b,
        "return Array.from(document.querySelectorAll('.details-row:not([hidden]) tr.change')).map(r => \
           Array.from(r.cells).map(c => c.innerText.trim()));",
        vec![],
    )
    .await;
    assert_eq!(
        changes,
        json!([
            ["require_2fa", "false", "→", "true"],
            ["min_severity", "low", "→", "high"]
        ]),
        "old → new values"
    );
    for want in [
        "policy-change",
        "Ada Lovelace <ada@acme.example>",
        "settings.policy_changed",
        "Default scan policy",
        "203.0.113.9",
        "Mozilla/5.0 (X11; Linux x86_64)",
        "SEC-42",
        HOSTILE,
        // Provenance: written by the ingest key that sent it.
        "an app, with ingest key key_",
    ] {
        assert!(details.contains(want), "details show {want:?}:\n{details}");
    }
    // No app's entry carries the collector's "system" marker.
    let system_badges = js(
        b,
        "return document.querySelectorAll('#entries-body tr.entry .badge.system').length;",
        vec![],
    )
    .await;
    assert_eq!(
        system_badges,
        json!(0),
        "apps' entries are not marked as system"
    );
    let injected = js(
        b,
        "return document.querySelectorAll('#entries img, #entries b').length;",
        vec![],
    )
    .await;
    assert_eq!(injected, 0, "record text is never markup");
    assert!(!b.title().await.unwrap().contains("pwned"));
    // A laptop's view of the top of the page, then the whole page with the details open.
    js(b, "window.scrollTo(0, 0);", vec![]).await;
    screenshot(b, "dashboard-laptop.png").await;
    let layout = js(
        b,
        "const r = (s) => { const b = document.querySelector(s).getBoundingClientRect(); \
           return [Math.round(b.left), Math.round(b.right)]; }; \
         return {sidebar: r('.sidebar'), results: r('.results'), page: document.documentElement.scrollWidth, \
           view: window.innerWidth, height: document.documentElement.scrollHeight};",
        vec![],
    )
    .await;
    eprintln!("layout: {layout}");
    let (width, height) = b.get_window_size().await.unwrap();
    let page_height = layout["height"].as_u64().unwrap_or(900);
    b.set_window_size(width as u32, (page_height + 150).min(4000) as u32)
        .await
        .unwrap();
    let shot = screenshot(b, "dashboard.png").await;
    b.set_window_size(width as u32, height as u32)
        .await
        .unwrap();

    // Export: the page asks for exactly the filters shown, with the bearer key.
    let export_query = format!("format=csv&category=settings&{range}");
    // The API's own export of the same filters, read whole here (a blocking body must not be
    // read or dropped on the browser's async thread).
    let (export_status, disposition, api_bytes) = blocking(|| {
        let r = c.get(&format!("{base}/audit-log/export?{export_query}"), admin);
        let status = r.status().as_u16();
        let disposition = r
            .headers()
            .get("content-disposition")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, disposition, r.bytes().unwrap().to_vec())
    });
    record_fetches(b).await;
    click(b, Locator::Id("export-button")).await;
    let asked = wait_for("the export request", || async {
        let f = fetches(b).await;
        f.into_iter()
            .find(|(u, _)| u.contains("/audit-log/export"))
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    assert_eq!(asked.1.as_deref(), Some(format!("Bearer {admin}").as_str()));
    assert_eq!(
        query_pairs(&asked.0),
        query_pairs(&format!("?{export_query}")),
        "the export asks for the filters shown: {}",
        asked.0
    );
    if export_status == 404 {
        let said = wait_text(b, "export-status", |t| t.contains("404")).await;
        eprintln!(
            "NOTE: GET {base}/audit-log/export answers 404 on this branch; checked the request \
             the page makes and its message ({said:?}), not a downloaded file"
        );
    } else {
        assert_eq!(export_status, 200, "the API's own export");
        let file = wait_download(downloads).await;
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        // The server names the file for the moment it answered: the page's request and ours
        // may fall in different seconds.
        let stamp = |s: &str| {
            let at = s.find("audit-log-acme-")? + "audit-log-acme-".len();
            chrono::NaiveDateTime::parse_from_str(s.get(at..at + 16)?, "%Y%m%dT%H%M%SZ").ok()
        };
        let (ours, theirs) = (stamp(&name), stamp(&disposition));
        assert!(
            name.ends_with(".csv")
                && ours
                    .zip(theirs)
                    .is_some_and(|(a, b)| (a - b).num_seconds().abs() <= 60),
            "saved as the server's name: {name} / {disposition}"
        );
        let got = std::fs::read_to_string(&file).unwrap();
        let api_text = String::from_utf8_lossy(&api_bytes);
        assert_eq!(
            got, api_text,
            "the download is the API's export of the same filters"
        );
        // One CSV row per settings record shown (CSV has no id column: compare the times).
        assert_eq!(
            got.lines().count(),
            settings.len() + 1,
            "header + one row per record"
        );
        for entry in &settings {
            let time = entry["time"].as_str().unwrap();
            assert!(got.contains(time), "{time} in the download");
        }
        wait_text(b, "export-status", |t| t.starts_with("Downloaded")).await;
    }

    // Retention: shown to the admin, editable by the owner of this enterprise org only.
    let retention_status = blocking(|| c.get(&format!("{base}/settings/retention"), admin))
        .status()
        .as_u16();
    if retention_status == 404 {
        let said = wait_text(b, "retention-summary", |t| t.contains("404")).await;
        eprintln!(
            "NOTE: GET {base}/settings/retention answers 404 on this branch; checked the \
             panel's message ({said:?}) only"
        );
    } else {
        let r = blocking(|| c.get_json(&format!("{base}/settings/retention"), admin));
        wait_text(b, "retention-summary", |t| {
            t.contains(&format!("kept for {} days", r["days"]))
        })
        .await;
        assert!(!visible(b, "retention-form").await, "ORG_ADMIN cannot edit");
    }

    drive_grouped_views(b, c, admin).await;
    drive_views_and_layout(b, c, admin).await;
    sign_out(b).await;

    if retention_status != 404 {
        sign_in(b, owner).await;
        wait_visible(b, "retention-form").await;
        let input = b.find(Locator::Id("retention-days")).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys("400").await.unwrap();
        click(b, Locator::Id("retention-save")).await;
        wait_text(b, "retention-status", |t| t.starts_with("Saved")).await;
        let r = blocking(|| c.get_json(&format!("{base}/settings/retention"), owner));
        assert_eq!(r["days"], 400, "{r}");
        // The change is the collector's own entry: marked "system" in the list once shown.
        let marked = wait_for("the retention change marked as a system entry", || async {
            let v = js(
                b,
                "const rows = Array.from(document.querySelectorAll('#entries-body tr.entry')) \
                   .filter(r => r.innerText.includes('settings.retention_changed')); \
                 return rows.length ? rows.map(r => !!r.querySelector('.badge.system')) : null;",
                vec![],
            )
            .await;
            match v.as_array() {
                Some(flags) if !flags.is_empty() => Ok(flags.clone()),
                _ => {
                    // The list shows what was searchable when it loaded: ask again.
                    js(b, "document.getElementById('clear-filters').click(); document.getElementById('f-q').value = 'action:settings.retention_changed'; document.getElementById('filters').requestSubmit();", vec![]).await;
                    let shown = js(b, "return Array.from(document.querySelectorAll('#entries-body tr.entry')).slice(0, 3).map(r => r.innerText);", vec![]).await;
                    Err(format!("not listed yet: {shown}"))
                }
            }
        })
        .await;
        assert!(marked.iter().all(|f| f == &json!(true)), "{marked:?}");
        sign_out(b).await;
    }
    drive_streams(b, c, owner, receiver).await;
    eprintln!("dashboard screenshot: {}", shot.display());
}

/// Waits until the page's address holds `part` (the filters applied).
async fn wait_url(b: &Client, part: &str) {
    wait_for(&format!("{part} in the address"), || async {
        let url = b.current_url().await.unwrap().to_string();
        if url.contains(part) { Ok(()) } else { Err(url) }
    })
    .await;
}

/// Clicks the element `at` finds, as a person does.
async fn click(b: &Client, at: Locator<'_>) {
    b.find(at).await.unwrap().click().await.unwrap();
}

/// Real key presses to the focused element, each with an optional modifier held.
async fn press(b: &Client, keys: &[(Option<Key>, Key)]) {
    let mut actions = KeyActions::new("keyboard".to_string());
    for (modifier, key) in keys {
        if let Some(m) = modifier {
            actions = actions.then(KeyAction::Down { value: (*m).into() });
        }
        actions = actions
            .then(KeyAction::Down {
                value: (*key).into(),
            })
            .then(KeyAction::Up {
                value: (*key).into(),
            });
        if let Some(m) = modifier {
            actions = actions.then(KeyAction::Up { value: (*m).into() });
        }
    }
    b.perform_actions(actions).await.expect("key presses");
}

/// A viewer's consecutive views: after several filter changes the newest line is one group
/// with a count; opening it lists each view with its own filters, as the API groups them.
async fn drive_grouped_views(b: &Client, c: &Collector, admin: &str) {
    let base = format!("/api/v1/orgs/{ORG}");
    let key_id = blocking(|| c.get_json("/api/v1/whoami", admin))["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    js(
        b,
        "document.getElementById('clear-filters').click();",
        vec![],
    )
    .await;
    settled_rows(b).await;
    js(
        b,
        "document.getElementById('f-q').value = 'triage'; document.getElementById('filters').requestSubmit();",
        vec![],
    )
    .await;
    wait_url(b, "q=triage").await;
    wait_text(b, "result-count", |t| t != "Loading…" && !t.is_empty()).await;
    click(b, Locator::Css("label[for='f-category-scan']")).await;
    wait_url(b, "category=scan").await;
    wait_text(b, "result-count", |t| t != "Loading…" && !t.is_empty()).await;
    js(
        b,
        "document.getElementById('clear-filters').click();",
        vec![],
    )
    .await;
    // The views just made are searchable within a moment: reload until they lead the list.
    let group = wait_for("a grouped line of this key's views on top", || async {
        let v = js(
            b,
            "const first = document.querySelector('#entries-body tr'); \
             const busy = document.querySelector('.results').hasAttribute('aria-busy'); \
             return busy || !first ? null : {cls: first.className, actor: first.dataset.actor || null, \
               count: Number(first.dataset.count || 0), text: first.innerText};",
            vec![],
        )
        .await;
        let ok = v["cls"] == "view-group"
            && v["actor"] == json!(key_id)
            && v["count"].as_u64() >= Some(3)
            && v["text"].as_str().is_some_and(|t| t.contains("views"));
        if ok {
            return Ok(v);
        }
        b.refresh().await.unwrap();
        wait_visible(b, "log-view").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Err(v.to_string())
    })
    .await;
    let count = group["count"].as_u64().unwrap() as usize;
    let hidden = js(b, "return Array.from(document.querySelectorAll('#entries-body tr.view-member')).filter(r => !r.hidden).length;", vec![]).await;
    assert_eq!(hidden, 0, "closed: no member shows");
    click(b, Locator::Css("#entries-body tr.view-group .group-toggle")).await;
    let members = js(
        b,
        "const first = document.querySelector('#entries-body tr.view-group'); const out = []; \
         for (let r = first.nextElementSibling; r && !r.classList.contains('view-group') && !r.classList.contains('entry'); r = r.nextElementSibling) { \
           if (r.classList.contains('view-member')) out.push({id: r.dataset.id, shown: !r.hidden, text: r.innerText}); } \
         return {members: out, expanded: first.querySelector('.group-toggle').getAttribute('aria-expanded')};",
        vec![],
    )
    .await;
    assert_eq!(members["expanded"], "true", "{members}");
    let members = members["members"].as_array().unwrap().clone();
    assert_eq!(
        members.len(),
        count,
        "the count is the number of views listed: {members:?}"
    );
    assert!(members.iter().all(|m| m["shown"] == true), "{members:?}");
    let texts: Vec<&str> = members
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("q=triage") && t.contains("category=scan")),
        "each view shows its filters: {texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("q=triage") && !t.contains("category")),
        "{texts:?}"
    );
    // The API's grouping: the same views, newest first, each one an audit_log.viewed entry.
    let page = blocking(|| {
        c.get_json(
            &format!("{base}/audit-log?group_views=true&category=audit_log&limit=100"),
            admin,
        )
    });
    let entries = page["entries"].as_array().unwrap();
    let run = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|r| {
            r["views"]
                .as_object()
                .filter(|v| v["actor_id"] == json!(key_id))
        })
        .expect("a run of this key's views");
    let api_ids: Vec<&str> = run["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            entries[i.as_u64().unwrap() as usize]["id"]
                .as_str()
                .unwrap()
        })
        .collect();
    let ui_ids: Vec<&str> = members.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(
        ui_ids.iter().all(|id| api_ids.contains(id)),
        "the page's group is the API's run: {ui_ids:?} / {api_ids:?}"
    );
    for id in &ui_ids {
        let e = entries.iter().find(|e| e["id"] == json!(id)).unwrap();
        assert_eq!(e["action"], "audit_log.viewed");
        assert_eq!(e["actor"]["id"], json!(key_id));
    }
    screenshot(b, "dashboard-grouped-views.png").await;
    click(b, Locator::Css("#entries-body tr.view-group .group-toggle")).await;
}

/// The streams panel, as an ORG_OWNER: the declared stream read-only; a new HTTPS stream to a
/// receiver on loopback (signed, with a header and the test CA), of the current filters, seen
/// healthy with every matching record delivered; a test; pause and resume; delete. No secret
/// is ever on the page.
async fn drive_streams(b: &Client, c: &Collector, owner: &str, receiver: &HttpsReceiver) {
    let base = format!("/api/v1/orgs/{ORG}");
    b.set_window_size(1366, 900).await.unwrap();
    sign_in(b, owner).await;
    wait_visible(b, "streams").await;
    let declared = wait_for("the declared stream listed", || async {
        let v = js(b, "const r = document.querySelector(\"#streams-body tr[data-id='ops-syslog']\"); \
            return r ? {text: r.innerText, pause: !!r.querySelector('.stream-pause'), del: !!r.querySelector('.stream-delete')} : null;", vec![]).await;
        if v.is_null() { Err("not yet".into()) } else { Ok(v) }
    })
    .await;
    assert!(
        declared["text"].as_str().unwrap().contains("read-only")
            && declared["pause"] == false
            && declared["del"] == false,
        "declared in TOML: read-only: {declared}"
    );

    // The current filters: Scans only.
    js(
        b,
        "document.getElementById('clear-filters').click();",
        vec![],
    )
    .await;
    settled_rows(b).await;
    click(b, Locator::Css("label[for='f-category-scan']")).await;
    wait_text(b, "s-filters-summary", |t| t.contains("category=scan")).await;
    click(b, Locator::Css("#stream-new summary")).await;
    // A refused destination: the error names the field, and that field is marked.
    let name = b.find(Locator::Id("s-name")).await.unwrap();
    name.send_keys("siem-https").await.unwrap();
    let url = b.find(Locator::Id("s-https-url")).await.unwrap();
    url.send_keys("ftp://127.0.0.1/in").await.unwrap();
    click(b, Locator::Id("stream-create")).await;
    let refused = wait_text(b, "stream-form-error", |t| t.starts_with("Not created")).await;
    assert!(refused.contains("destination.url"), "{refused}");
    let marked = js(
        b,
        "return document.getElementById('s-https-url').getAttribute('aria-invalid');",
        vec![],
    )
    .await;
    assert_eq!(marked, "true", "the URL field is marked");
    url.clear().await.unwrap();
    let typed = [
        ("s-https-url", receiver.url("/in")),
        ("s-https-secret", SECRET.to_string()),
        ("s-https-headers", format!("Authorization: {HEADER_SECRET}")),
    ];
    for (id, text) in &typed {
        b.find(Locator::Id(id))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }
    // The CA's PEM as pasted (typing 700 characters key by key adds nothing).
    js(
        b,
        "document.getElementById('s-https-ca').value = arguments[0];",
        vec![json!(receiver.cert_pem)],
    )
    .await;
    set_value(b, "s-start", "beginning").await;
    click(b, Locator::Css("label[for='s-filters']")).await;
    click(b, Locator::Id("stream-create")).await;
    let created = wait_text(b, "streams-status", |t| t.starts_with("Created")).await;
    let listed = blocking(|| c.get_json(&format!("{base}/streams"), owner));
    let stream = listed["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "siem-https")
        .unwrap_or_else(|| panic!("{listed}"))
        .clone();
    let id = stream["id"].as_str().unwrap().to_string();
    assert!(created.contains(&id), "{created}");
    assert_eq!(stream["filters"], json!({"category": ["scan"]}), "{stream}");
    assert_eq!(stream["start"], "beginning", "{stream}");
    assert_eq!(stream["has_secret"], true, "{stream}");
    assert_eq!(stream["header_names"], json!(["Authorization"]), "{stream}");
    let panel = wait_text(b, "streams", |t| t.contains("siem-https")).await;
    assert!(
        !panel.contains("null") && !panel.contains("undefined"),
        "no placeholder leaks into the panel: {panel}"
    );
    assert!(
        panel.contains("category=scan"),
        "the stream's filters shown: {panel}"
    );
    // The panel at 1024 px: nothing wider than the window.
    b.set_window_size(1024, 900).await.unwrap();
    let widths = js(b, "return [document.documentElement.scrollWidth, window.innerWidth, \
        document.querySelector('#streams .table-wrap').scrollWidth, document.querySelector('#streams .table-wrap').clientWidth, \
        Math.min(...Array.from(document.querySelectorAll('#streams-body td')).map(td => td.getBoundingClientRect().width))];", vec![]).await;
    assert!(
        widths[0].as_u64() <= widths[1].as_u64() && widths[2].as_u64() <= widths[3].as_u64(),
        "no horizontal overflow at 1024 px: {widths}"
    );
    assert!(
        widths[4].as_f64() >= Some(60.0),
        "no squeezed column in the streams table: {widths}"
    );
    screenshot(b, "dashboard-streams-1024.png").await;
    b.set_window_size(1366, 900).await.unwrap();

    // Healthy, with every scan record delivered and nothing else.
    let scans = blocking(|| c.search_all(ORG, "category=scan", owner));
    let want: std::collections::BTreeSet<String> = ids(&scans).into_iter().collect();
    let row = format!("#streams-body tr[data-id='{id}']");
    wait_for("the stream healthy with a success", || async {
        let v = js(b, "const r = document.querySelector(arguments[0]); \
            return r ? {state: r.dataset.state, success: r.querySelector('.stream-success').textContent} : null;", vec![json!(row)]).await;
        if v["state"] == "healthy" && v["success"].as_str().is_some_and(|t| t.ends_with("UTC")) { Ok(v) } else { Err(v.to_string()) }
    })
    .await;
    wait_for("every scan record delivered", || async {
        let got: std::collections::BTreeSet<String> = receiver
            .received
            .all()
            .iter()
            .filter(|r| r["seq"].as_u64().unwrap_or(0) > 0)
            .filter_map(|r| r["id"].as_str().map(str::to_string))
            .collect();
        if got == want {
            Ok(())
        } else {
            Err(format!("{} of {} delivered", got.len(), want.len()))
        }
    })
    .await;
    let delivered = receiver.received.all();
    assert!(
        delivered
            .iter()
            .filter(|r| r["seq"].as_u64().unwrap_or(0) > 0)
            .all(|r| r["category"] == "scan"),
        "only the view's records"
    );
    screenshot(b, "dashboard-streams.png").await;

    // Test: the answer's status and timing, never its body.
    click(b, Locator::Css(&format!("{row} .stream-test"))).await;
    let tested = wait_for("the test's answer", || async {
        let t = js(b, "return document.querySelector(arguments[0]).querySelector('.stream-result').textContent;", vec![json!(row)]).await;
        let t = t.as_str().unwrap_or_default().to_string();
        if t.starts_with("Accepted") { Ok(t) } else { Err(t) }
    })
    .await;
    assert!(
        tested.contains("HTTP 200") && tested.contains(" ms"),
        "{tested}"
    );
    assert!(!tested.contains("receiver body"), "{tested}");

    // Pause, then resume: the API agrees, and a record written while paused arrives after.
    click(b, Locator::Css(&format!("{row} .stream-pause"))).await;
    wait_text(b, "streams-status", |t| t.starts_with("Paused")).await;
    wait_for("paused in the panel", || async {
        let v = js(b, "return [document.querySelector(arguments[0]).dataset.state, document.querySelector(arguments[0]).querySelector('.stream-pause').textContent];", vec![json!(row)]).await;
        if v == json!(["paused", "Resume"]) { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    let api = blocking(|| c.get_json(&format!("{base}/streams/{id}"), owner));
    assert_eq!(api["status"]["state"], "paused", "{api}");
    let ingest = blocking(|| c.create_key(ORG, "INGEST"));
    let late = record(
        ORG,
        "late-scan",
        "scan.triggered",
        "ada@acme.example",
        &days_ago(0, 0),
    );
    let (status, body) = blocking(|| c.ingest(&ingest, &[late]));
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let arrived = |id: &str| receiver.received.all().iter().any(|r| r["id"] == json!(id));
    assert!(!arrived("late-scan"), "nothing is sent while paused");
    click(b, Locator::Css(&format!("{row} .stream-pause"))).await;
    wait_text(b, "streams-status", |t| t.starts_with("Resumed")).await;
    wait_for("resumed: the late record delivered", || async {
        if arrived("late-scan") {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    wait_for("healthy again", || async {
        let v = js(
            b,
            "return document.querySelector(arguments[0]).dataset.state;",
            vec![json!(row)],
        )
        .await;
        if v == "healthy" {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;

    // Secrets are never on the page: not in its text, nor left in a field.
    let page = js(b, "return document.body.innerText + ' ' + Array.from(document.querySelectorAll('input, textarea')).map(i => i.value).join(' ');", vec![]).await;
    let page = page.as_str().unwrap();
    assert!(
        !page.contains(SECRET) && !page.contains(HEADER_SECRET),
        "a secret on the page"
    );

    // Delete, after a confirmation.
    click(b, Locator::Css(&format!("{row} .stream-delete"))).await;
    click(b, Locator::Css(&format!("{row} .stream-delete-confirm"))).await;
    wait_text(b, "streams-status", |t| t.starts_with("Deleted")).await;
    let gone = blocking(|| c.get(&format!("{base}/streams/{id}"), owner))
        .status()
        .as_u16();
    assert_eq!(gone, 404, "deleted");
    let left = js(
        b,
        "return document.querySelectorAll(arguments[0]).length;",
        vec![json!(row)],
    )
    .await;
    assert_eq!(left, 0);
    sign_out(b).await;
}

/// The counts beside the action-type checkboxes.
async fn category_counts(b: &Client) -> BTreeMap<String, u64> {
    let v = js(
        b,
        "return Array.from(document.querySelectorAll('#f-category-list .facet-count')).map(s => \
           [s.dataset.category, s.textContent]);",
        vec![],
    )
    .await;
    let pairs: Vec<(String, String)> = serde_json::from_value(v).unwrap();
    pairs
        .into_iter()
        .map(|(k, v)| (k, v.replace(',', "").parse().unwrap_or(u64::MAX)))
        .collect()
}

async fn select_options(b: &Client, id: &str) -> Vec<String> {
    let v = js(
        b,
        "return Array.from(document.getElementById(arguments[0]).options).map(o => o.text);",
        vec![json!(id)],
    )
    .await;
    serde_json::from_value(v).unwrap()
}

/// Layout at `width` px: no horizontal overflow of the page or the table, every Details button
/// whole and inside the table's box, action names on one line per dotted part.
async fn check_layout(b: &Client, width: u32, shot: &str) {
    b.set_window_size(width, 900).await.unwrap();
    let layout = wait_for(&format!("the layout at {width} px"), || async {
        let v = js(
            b,
            "const wrap = document.querySelector('.table-wrap'); const box = wrap.getBoundingClientRect(); \
             const buttons = Array.from(document.querySelectorAll('#entries-body .details-toggle')).filter(x => x.offsetParent); \
             const clipped = buttons.filter(x => { const r = x.getBoundingClientRect(); \
               return r.right > box.right + 1 || r.left < box.left - 1 || x.scrollWidth > x.clientWidth + 1; }).length; \
             const broken = Array.from(document.querySelectorAll('#entries-body .col-action .nowrap')) \
               .filter(s => s.getClientRects().length > 1).length; \
             const clips = Array.from(document.querySelectorAll('#entries-body tr.entry .clip')).filter(x => x.offsetParent); \
             const wrapped = clips.filter(x => x.getClientRects().length > 1).length; \
             const untitled = clips.filter(x => x.scrollWidth > x.clientWidth + 1 && x.title !== x.textContent).length; \
             const cut = clips.filter(x => x.scrollWidth > x.clientWidth + 1).length; \
             const ips = Array.from(document.querySelectorAll('#entries-body tr.entry .col-ip .clip')).filter(x => /^[0-9.]+$/.test(x.textContent)); \
             const ipCut = ips.filter(x => x.scrollWidth > x.clientWidth + 1).length; \
             const ipWidth = document.querySelector('#entries th.col-ip').getBoundingClientRect().width; \
             const repoShown = getComputedStyle(document.querySelector('#entries th.col-repo')).display !== 'none'; \
             const longCut = Array.from(document.querySelectorAll(\"tr.entry[data-id='long-target'] .col-target .clip\")) \
               .some(x => x.scrollWidth > x.clientWidth + 1 && x.title.startsWith('https://hooks.example.com/')); \
             return {page: document.documentElement.scrollWidth, view: window.innerWidth, \
               table: wrap.scrollWidth, wrap: wrap.clientWidth, buttons: buttons.length, clipped, broken, \
               clips: clips.length, wrapped, untitled, cut, ips: ips.length, ipCut, ipWidth, repoShown, longCut, \
               long: !!document.querySelector(\"tr.entry[data-id='long-target']\")};",
            vec![],
        )
        .await;
        let ok = v["page"].as_u64() <= v["view"].as_u64()
            && v["table"].as_u64() <= v["wrap"].as_u64()
            && v["clipped"] == 0
            && v["broken"] == 0
            && v["wrapped"] == 0
            && v["untitled"] == 0
            && v["ipCut"] == 0
            && v["ips"].as_u64() > Some(0)
            && v["clips"].as_u64() > Some(0)
            && v["buttons"].as_u64() > Some(0);
        if ok { Ok(v) } else { Err(v.to_string()) }
    })
    .await;
    eprintln!("layout at {width} px: {layout}");
    assert_eq!(
        layout["long"], true,
        "the long target is on screen: {layout}"
    );
    assert_eq!(
        layout["longCut"], true,
        "the long target is cut with an ellipsis, whole in its tooltip: {layout}"
    );
    assert!(
        layout["ipWidth"].as_f64().unwrap() >= 110.0,
        "the IP column is not squeezed: {layout}"
    );
    // Below 1200 px the repository column gives way (the target names it; Details shows it).
    assert_eq!(layout["repoShown"], width > 1200, "{layout}");
    screenshot(b, shot).await;
}

/// The activity chart, a preset, click-to-filter, a saved view opened by link, an entry opened
/// by link, and the layout at 1400 and 1024 px.
async fn drive_views_and_layout(b: &Client, c: &Collector, admin: &str) {
    let base = format!("/api/v1/orgs/{ORG}");
    js(
        b,
        "document.getElementById('clear-filters').click();",
        vec![],
    )
    .await;
    let (since, until) = (date_ago(29), date_ago(2));
    set_value(b, "f-since", &since).await;
    set_value(b, "f-until", &until).await;
    wait_rows(b, 50).await;
    for (width, shot) in [(1400, "dashboard-1400.png"), (1024, "dashboard-1024.png")] {
        check_layout(b, width, shot).await;
    }
    b.set_window_size(1366, 900).await.unwrap();

    // A preset: the last 7 days, relative, pressed, and no date typed.
    click(b, Locator::Css("#f-presets .preset[data-since='7d']")).await;
    wait_for("since=7d in the address", || async {
        let url = b.current_url().await.unwrap().to_string();
        if url.contains("since=7d") && !url.contains("until=") {
            Ok(())
        } else {
            Err(url)
        }
    })
    .await;
    let pressed = js(b, "return document.querySelector(\"#f-presets .preset[data-since='7d']\").getAttribute('aria-pressed');", vec![]).await;
    assert_eq!(pressed, "true");
    let typed = js(
        b,
        "return document.getElementById('f-since').value;",
        vec![],
    )
    .await;
    assert_eq!(typed, "", "a preset types no date");

    // The chart: a bar per day of the 7 days; dragging from the 2nd to the 4th bar sets those days.
    let bars = wait_for("the chart's bars", || async {
        let v = js(
            b,
            "const c = document.getElementById('activity-chart'); if (!c) return null; \
             return {interval: c.dataset.interval, starts: Array.from(c.querySelectorAll('.bar')).map(r => r.dataset.start)};",
            vec![],
        )
        .await;
        match v["starts"].as_array() {
            Some(s) if s.len() >= 7 => Ok(v.clone()),
            _ => Err(v.to_string()),
        }
    })
    .await;
    assert_eq!(bars["interval"], "day", "{bars}");
    let day = |i: usize| bars["starts"][i].as_str().unwrap()[..10].to_string();
    let (from_day, to_day) = (day(1), day(3));
    js(
        b,
        "const c = document.getElementById('activity-chart'); const bars = c.querySelectorAll('.bar'); \
         const x = (i) => { const r = bars[i].getBoundingClientRect(); return r.left + r.width / 2; }; \
         const y = c.getBoundingClientRect().top + 10; \
         const fire = (type, i) => c.dispatchEvent(new PointerEvent(type, {bubbles: true, clientX: x(i), clientY: y, pointerId: 1})); \
         fire('pointerdown', 1); fire('pointermove', 2); fire('pointermove', 3); fire('pointerup', 3);",
        vec![],
    )
    .await;
    let brushed = format!("since={from_day}&until={to_day}");
    let expected = blocking(|| c.search_all(ORG, &brushed, admin));
    wait_text(b, "result-count", |t| {
        t.ends_with(&of_entries(expected.len())) || (expected.is_empty() && t == "No entries")
    })
    .await;
    let url = b.current_url().await.unwrap().to_string();
    assert!(url.contains(&brushed), "the brush sets the dates: {url}");
    let field = js(b, "return [document.getElementById('f-since').value, document.getElementById('f-until').value];", vec![]).await;
    assert_eq!(field, json!([from_day, to_day]), "shown as YYYY-MM-DD");

    // The keyboard, on the chart of the brushed days (per hour now): End picks the last bar,
    // ArrowLeft moves to the one before, Shift+ArrowLeft widens by one more, Enter applies.
    let bars = wait_for("the brushed days' chart", || async {
        let v = js(b, "const c = document.getElementById('activity-chart'); \
            return c ? {interval: c.dataset.interval, starts: Array.from(c.querySelectorAll('.bar')).map(r => r.dataset.start)} : null;", vec![]).await;
        match v["starts"].as_array() {
            Some(a) if a.len() >= 3 && a[0].as_str().is_some_and(|s| s.starts_with(&from_day)) => Ok(v.clone()),
            _ => Err(v.to_string()),
        }
    })
    .await;
    let starts: Vec<chrono::DateTime<Utc>> = bars["starts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().parse().unwrap())
        .collect();
    let hourly = bars["interval"] == "hour";
    let n = starts.len();
    let shown = |t: chrono::DateTime<Utc>| {
        t.format(if hourly { "%Y-%m-%d %H:%M" } else { "%Y-%m-%d" })
            .to_string()
    };
    let (first_bar, last_bar) = (starts[n - 3], starts[n - 2]);
    js(
        b,
        "document.getElementById('activity-chart').focus();",
        vec![],
    )
    .await;
    press(
        b,
        &[
            (None, Key::End),
            (None, Key::Left),
            (Some(Key::Shift), Key::Left),
        ],
    )
    .await;
    let want = format!("Selected {} to {}", shown(first_bar), shown(last_bar));
    wait_text(b, "activity-selection", |t| t.starts_with(&want)).await;
    press(b, &[(None, Key::Enter)]).await;
    let keyed_until = if hourly {
        shown(last_bar + Days::hours(1))
    } else {
        shown(last_bar)
    };
    wait_for("the keyboard's range in the date fields", || async {
        let v = js(b, "return [document.getElementById('f-since').value, document.getElementById('f-until').value];", vec![]).await;
        if v == json!([shown(first_bar), keyed_until]) { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    let focused = js(
        b,
        "return document.activeElement && document.activeElement.id;",
        vec![],
    )
    .await;
    assert_eq!(focused, "activity-chart", "focus stays on the chart");

    // A date that is not one is refused, naming the format; nothing is asked.
    set_value(b, "f-since", "12/01/2026").await;
    wait_text(b, "f-dates-error", |t| t.contains("YYYY-MM-DD")).await;
    set_value(b, "f-since", &since).await;
    set_value(b, "f-until", &until).await;
    wait_rows(b, 50).await;

    // Click-to-filter: a row's repository, then its IP.
    let first = rows(b).await[0].clone();
    click(
        b,
        Locator::Css("#entries-body tr.entry .col-repo .cell-filter"),
    )
    .await;
    let repo = first[5].clone();
    let repo_q = format!(
        "repository={}&since={since}&until={until}",
        repo.replace('/', "%2F")
    );
    let in_repo = blocking(|| c.search_all(ORG, &repo_q, admin));
    wait_text(b, "result-count", |t| {
        t.ends_with(&of_entries(in_repo.len()))
    })
    .await;
    assert!(rows(b).await.iter().all(|r| r[5] == repo));
    let ip = first[6].clone();
    js(
        b,
        "document.querySelector('#entries-body tr.entry .col-ip .cell-filter').click();",
        vec![],
    )
    .await;
    wait_for("ip: in the search", || async {
        let q = js(b, "return document.getElementById('f-q').value;", vec![]).await;
        let q = q.as_str().unwrap_or_default().to_string();
        if q.starts_with("ip:") { Ok(q) } else { Err(q) }
    })
    .await;
    let shown = wait_for("rows of one IP", || async {
        let r = rows(b).await;
        if !r.is_empty() && r.iter().all(|row| row[6] == r[0][6]) {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    eprintln!("filtered by IP {ip}: {} rows", shown.len());

    // A saved view of these filters, kept by the collector, opened by its link.
    let name = b.find(Locator::Id("view-name")).await.unwrap();
    name.send_keys("Web repo, one IP").await.unwrap();
    click(b, Locator::Id("view-save")).await;
    wait_text(b, "views-status", |t| t.starts_with("Saved")).await;
    let views = blocking(|| c.get_json(&format!("{base}/saved-views"), admin));
    let view = &views["views"][0];
    assert_eq!(view["name"], "Web repo, one IP", "{views}");
    assert_eq!(view["filters"]["repository"], json!([repo]), "{views}");
    assert!(
        view["filters"]["q"][0].as_str().unwrap().starts_with("ip:"),
        "{views}"
    );
    let id = view["id"].as_str().unwrap().to_string();
    b.goto(&c.url(&format!("/settings/audit-log?view={id}")))
        .await
        .unwrap();
    wait_visible(b, "log-view").await;
    wait_for("the view's filters", || async {
        let v = js(b, "return [document.getElementById('f-repository').value, document.getElementById('f-q').value, document.getElementById('f-since').value];", vec![]).await;
        if v[0] == json!(repo) && v[1].as_str().is_some_and(|q| q.starts_with("ip:")) { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    wait_for("the view listed", || async {
        let v = js(b, "return Array.from(document.querySelectorAll('#views-list .view-link')).map(a => a.textContent);", vec![]).await;
        if v == json!(["Web repo, one IP"]) { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    screenshot(b, "dashboard-saved-view.png").await;

    // Rename in place, then delete after the in-place question.
    click(b, Locator::Css("#views-list .view-rename")).await;
    let input = b
        .find(Locator::Css("#views-list .view-new-name"))
        .await
        .unwrap();
    input.clear().await.unwrap();
    input
        .send_keys(&format!("Web, one IP{}", Key::Enter))
        .await
        .unwrap();
    wait_text(b, "views-status", |t| t.starts_with("Renamed")).await;
    let views = blocking(|| c.get_json(&format!("{base}/saved-views"), admin));
    assert_eq!(views["views"][0]["name"], "Web, one IP", "{views}");
    assert_eq!(views["views"][0]["id"], json!(id), "the same view: {views}");
    wait_for("the new name listed", || async {
        let v = js(b, "return Array.from(document.querySelectorAll('#views-list .view-link')).map(a => a.textContent);", vec![]).await;
        if v == json!(["Web, one IP"]) { Ok(()) } else { Err(v.to_string()) }
    })
    .await;
    click(b, Locator::Css("#views-list .view-delete")).await;
    click(b, Locator::Css("#views-list .view-delete-confirm")).await;
    wait_text(b, "views-status", |t| t.starts_with("Deleted")).await;
    let views = blocking(|| c.get_json(&format!("{base}/saved-views"), admin));
    assert_eq!(views["views"], json!([]), "{views}");
    wait_visible(b, "views-empty").await;

    // One entry by link: the details' link opens it.
    b.goto(&c.url("/settings/audit-log?entry=policy-change"))
        .await
        .unwrap();
    wait_visible(b, "entry-view").await;
    let shown = wait_text(b, "entry-body", |t| t.contains("settings.policy_changed")).await;
    assert!(shown.contains("policy-change"), "{shown}");
    let copy = js(
        b,
        "return document.querySelector('#entry-body .copy-link').dataset.link;",
        vec![],
    )
    .await;
    assert!(
        copy.as_str()
            .unwrap()
            .ends_with("/settings/audit-log?entry=policy-change"),
        "{copy}"
    );
    screenshot(b, "dashboard-entry-link.png").await;
}

/// The end of the result count for `n` entries: "of 1 entry", "of 12 entries".
fn of_entries(n: usize) -> String {
    format!("of {n} {}", if n == 1 { "entry" } else { "entries" })
}
