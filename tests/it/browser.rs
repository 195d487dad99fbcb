//! A headless Chromium driven through chromedriver, for the tests of the web
//! console: what a person sees, types and clicks, with JavaScript and
//! without it.
//!
//! Each `Browser` runs its own chromedriver and Chromium on a fresh profile,
//! so tests share no cookies, storage or cache.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use fantoccini::cookies::Cookie;
use fantoccini::elements::Element;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::support::Workspace;

const NEEDED: &str = "the console's browser tests need chromium and chromium-driver \
                      (apt-get install chromium chromium-driver)";

/// How long chromedriver gets to answer its status as ready: Chromium is
/// only started later, with the session.
const DRIVER_READY: Duration = Duration::from_secs(30);

/// A headless Chromium session; chromedriver and Chromium are killed when
/// it is dropped.
pub struct Browser {
    client: Client,
    session: String,
    // Dropped after `client`: kills what is left and removes the profile.
    driver: Driver,
}

impl Browser {
    /// A browser with JavaScript on, or `None` (with a note on stderr) where
    /// Chromium or chromedriver is not installed. On CI (`CI=true`) their
    /// absence fails the test instead: CI installs them, so a skip there
    /// would hide a broken setup.
    pub async fn start() -> Option<Browser> {
        Browser::launch(true).await
    }

    /// A browser whose pages run no script, as with JavaScript turned off
    /// in the settings. Chrome cannot switch JavaScript within a session, so
    /// this is a browser of its own.
    pub async fn start_without_javascript() -> Option<Browser> {
        Browser::launch(false).await
    }

    async fn launch(javascript: bool) -> Option<Browser> {
        let (Some(chromedriver), Some(chromium)) = (on_path("chromedriver"), on_path("chromium"))
        else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{NEEDED}; CI=true, so they are not skipped");
            }
            eprintln!("skipping: {NEEDED}");
            return None;
        };
        let driver = Driver::start(&chromedriver).await;

        let mut options = json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                // Root in a container has no user namespace for the sandbox.
                "--no-sandbox",
                "--disable-gpu",
                // Docker's /dev/shm is 64 MiB, too small for Chromium.
                "--disable-dev-shm-usage",
                "--window-size=1400,1000",
                format!("--user-data-dir={}", driver.profile.path().display()),
            ],
        });
        if !javascript {
            options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let mut capabilities = Capabilities::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        // A hung page fails its test instead of hanging it.
        capabilities.insert(
            "timeouts".into(),
            json!({ "pageLoad": 30_000, "script": 30_000, "implicit": 0 }),
        );

        // chromedriver speaks plain HTTP on loopback: no TLS connector, which
        // also keeps rustls' choice of crypto provider out of the way.
        let client = match ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
        {
            Ok(client) => client,
            Err(e) => panic!(
                "chromedriver could not start Chromium: {e}\nchromedriver's output:\n{}",
                driver.output()
            ),
        };
        let session = client
            .session_id()
            .await
            .ok()
            .flatten()
            .expect("a WebDriver session has an id");
        Some(Browser {
            client,
            session,
            driver,
        })
    }

    /// The WebDriver client, for what the methods here do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        if let Err(e) = self.client.goto(url).await {
            panic!("opening {url}: {e}");
        }
    }

    pub async fn current_url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// Loads the page again, as the reload button does.
    pub async fn reload(&self) {
        self.client.refresh().await.unwrap();
    }

    /// The page's HTML as the browser holds it now (scripts' changes
    /// included).
    pub async fn page_source(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// The visible text of the whole page.
    pub async fn page_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The visible text of the first element matching `css`.
    pub async fn text_of(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// The visible text of every element matching `css`, in page order.
    pub async fn texts_of(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await.unwrap() {
            texts.push(element.text().await.unwrap());
        }
        texts
    }

    /// How much wider than the window the page is, in CSS pixels: 0 when
    /// nothing makes a reader scroll sideways.
    pub async fn overflow_x(&self) -> i64 {
        let width = self
            .client
            .execute(
                "const e = document.documentElement; return e.scrollWidth - e.clientWidth;",
                vec![],
            )
            .await
            .unwrap();
        width
            .as_i64()
            .unwrap_or_else(|| panic!("not a width: {width}"))
    }

    /// What axe-core (its source in `axe`) finds against the WCAG 2.1 A and
    /// AA rules on the page now: one line per rule broken, with the
    /// elements that break it.
    pub async fn accessibility_violations(&self, axe: &str) -> Vec<String> {
        self.client.execute(axe, vec![]).await.unwrap();
        let found = self
            .client
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } })
                    .then(r => done(r.violations.map(v => `${v.id} (${v.impact}): ${v.help}: `
                        + v.nodes.map(n => n.target.join(" ")).join(", "))))
                    .catch(e => done([`axe failed: ${e}`]));"#,
                vec![],
            )
            .await
            .unwrap();
        found
            .as_array()
            .unwrap_or_else(|| panic!("not a list of violations: {found}"))
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Makes the window `width` by `height` CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    /// An attribute of the first element matching `css`.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.find(css).await.attr(name).await.unwrap()
    }

    /// Waits until the first element matching `css` shows `needle`, and
    /// returns its text; for what scripts or later requests fill in.
    pub async fn wait_for_text(&self, css: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
            {
                if text.contains(needle) {
                    return text;
                }
                last = Some(text);
            }
            if Instant::now() >= deadline {
                panic!(
                    "`{css}` did not show {needle:?} within {timeout:?}; it shows {}\n\
                     the page ({}) reads:\n{}",
                    last.map_or("nothing (no element matches)".into(), |t| format!("{t:?}")),
                    self.current_url().await,
                    self.page_text().await,
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the first element matching `css`; a click that navigates
    /// returns once the new page has loaded.
    pub async fn click(&self, css: &str) {
        if let Err(e) = self.find(css).await.click().await {
            panic!("clicking `{css}`: {e}");
        }
    }

    /// Replaces the value of the first field matching `css` by typing.
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        if let Err(e) = field.send_keys(value).await {
            panic!("typing into `{css}`: {e}");
        }
    }

    /// Chooses the option of value `value` in the `<select>` matching `css`.
    pub async fn select(&self, css: &str, value: &str) {
        if let Err(e) = self.find(css).await.select_by_value(value).await {
            panic!("choosing {value:?} in `{css}`: {e}");
        }
    }

    /// Submits the form matching `css` by clicking its submit button, as a
    /// person would: the button's own name and value go with the form, and
    /// it works without JavaScript.
    pub async fn submit(&self, css: &str) {
        let form = self.find(css).await;
        let button = form
            .find(Locator::Css(
                "button:not([type]), button[type=submit], input[type=submit]",
            ))
            .await
            .unwrap_or_else(|_| panic!("the form `{css}` has no submit button"));
        // The page being left, to see it go: a click can return before
        // the browser has navigated, on a busy machine.
        let before = self.find("html").await;
        if let Err(e) = button.click().await {
            panic!("submitting `{css}`: {e}");
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while before.tag_name().await.is_ok() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The cookies the browser holds for the current page.
    pub async fn cookies(&self) -> Vec<Cookie<'static>> {
        self.client.get_all_cookies().await.unwrap()
    }

    /// Forgets every cookie of the current page's site, e.g. to act as a
    /// visitor whose session is gone.
    pub async fn delete_all_cookies(&self) {
        self.client.delete_all_cookies().await.unwrap();
    }

    /// Saves what the window shows as
    /// `<CARGO_TARGET_TMPDIR>/console-screenshots/<name>.png`, to look at
    /// after the run, and returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        // Chromium's renderer can miss the driver's deadline while two cores
        // run the whole suite; a second try a moment later gets the picture.
        let mut errors = Vec::new();
        for _ in 0..3 {
            match self.client.screenshot().await {
                Ok(png) => {
                    std::fs::write(&path, png).unwrap();
                    eprintln!("screenshot: {}", path.display());
                    return path;
                }
                Err(e) => errors.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        panic!("no screenshot `{name}` after 3 tries: {errors:#?}")
    }

    /// The first element matching `css`; a test cannot go on without it.
    async fn find(&self, css: &str) -> Element {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element,
            Err(e) => panic!(
                "no element matches `{css}` ({e}); the page ({}) reads:\n{}",
                self.current_url().await,
                self.page_text().await,
            ),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session makes chromedriver quit Chromium. Drop cannot
        // await the client, so the request goes over a plain socket.
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.driver.port)) else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.session, self.driver.port
        );
        // chromedriver answers once Chromium has quit, and keeps the
        // connection open whatever the request says: the answer's first
        // bytes are the end of the wait.
        if stream.write_all(request.as_bytes()).is_ok() {
            let _ = stream.read(&mut [0; 256]);
        }
    }
}

/// A running chromedriver and the profile its Chromium uses.
struct Driver {
    child: Child,
    port: u16,
    output: Arc<Mutex<String>>,
    profile: tempfile::TempDir,
}

impl Driver {
    /// Starts chromedriver on a free loopback port and waits until it is
    /// ready. The port is free when chosen, but another process may take it
    /// before chromedriver binds it: then chromedriver exits and another
    /// port is tried.
    async fn start(chromedriver: &Path) -> Driver {
        for attempt in 1..=3 {
            let port = crate::support::free_port().port();
            let profile = tempfile::Builder::new()
                .prefix("converge-chromium-")
                .tempdir()
                .unwrap();
            let mut child = Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting chromedriver");
            let output = Arc::new(Mutex::new(String::new()));
            collect(child.stdout.take().unwrap(), &output);
            collect(child.stderr.take().unwrap(), &output);
            let mut driver = Driver {
                child,
                port,
                output,
                profile,
            };
            match driver.wait_until_ready().await {
                Ok(()) => return driver,
                Err(exited) if attempt < 3 => {
                    eprintln!("chromedriver exited ({exited}) on port {port}; trying another port");
                }
                Err(exited) => panic!(
                    "chromedriver exited ({exited}) before it was ready; its output:\n{}",
                    driver.output()
                ),
            }
        }
        unreachable!()
    }

    /// Polls `/status` until chromedriver says it is ready; `Err` when it
    /// exits first. Panics when it neither answers nor exits in time.
    async fn wait_until_ready(&mut self) -> Result<(), std::process::ExitStatus> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + DRIVER_READY;
        loop {
            if let Ok(response) = http.get(format!("{}/status", self.url())).send().await
                && let Ok(body) = response.text().await
                && let Ok(status) = serde_json::from_str::<Value>(&body)
                && status["value"]["ready"] == true
            {
                return Ok(());
            }
            if let Some(exited) = self.child.try_wait().unwrap() {
                // The pipes' last lines, for the message.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(exited);
            }
            if Instant::now() >= deadline {
                panic!(
                    "chromedriver was not ready within {DRIVER_READY:?} on port {}; its output:\n{}",
                    self.port,
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Chromium outlives a killed chromedriver. Whatever still runs on
        // this profile (the session did not end, or was never made) is
        // killed by its pid; the profile's path is unique to this browser.
        let profile = format!("--user-data-dir={}", self.profile.path().display());
        for pid in processes_with_argument(&profile) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pids of the processes whose command line contains `argument`.
/// Chromium rewrites its children's command lines into one string, so this
/// looks for a substring rather than a whole argument.
fn processes_with_argument(argument: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(argument)
                .then_some(pid)
        })
        .filter(|pid| *pid != std::process::id())
        .collect()
}

/// Keeps what a pipe says, for the messages of failures; reading it also
/// keeps a chatty chromedriver from blocking on a full pipe.
fn collect(pipe: impl Read + Send + 'static, into: &Arc<Mutex<String>>) {
    let into = into.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut all = into.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
}

/// An executable named `name` in a directory of `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| {
            path.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_opens_the_daemons_pages() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let workspace = Workspace::new(&[], "");
    let daemon = workspace.start();

    browser.goto(&format!("{}/healthz", daemon.url)).await;
    assert_eq!(browser.text_of("body").await, "ok");
    let screenshot = browser.screenshot("healthz").await;
    let png = std::fs::read(screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_without_javascript_opens_pages_and_runs_no_script() {
    let Some(browser) = Browser::start_without_javascript().await else {
        return;
    };
    let workspace = Workspace::new(&[], "");
    let daemon = workspace.start();
    browser.goto(&format!("{}/healthz", daemon.url)).await;
    assert_eq!(browser.text_of("body").await, "ok");

    let site = page_server().await;
    browser.goto(&site).await;
    // Long enough for the page's script to have run, were it allowed to.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(browser.text_of("#scripted").await, "before scripts");
}

/// The helpers the console's tests rely on, on a page of known shape:
/// a form posted with a cookie set in return, and text a script fills in.
#[tokio::test(flavor = "multi_thread")]
async fn a_browser_fills_forms_and_keeps_cookies() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let site = page_server().await;
    browser.goto(&site).await;
    let scripted = browser
        .wait_for_text("#scripted", "after scripts", Duration::from_secs(10))
        .await;
    assert_eq!(scripted, "after scripts");
    assert_eq!(browser.client().title().await.unwrap(), "form");
    assert_eq!(browser.count("form input").await, 1);
    assert_eq!(
        browser.attr("form", "action").await.as_deref(),
        Some("/echo")
    );

    browser.fill("input[name=who]", "first").await;
    browser.fill("input[name=who]", "Ada").await;
    browser.select("select[name=color]", "blue").await;
    browser.submit("form").await;
    assert_eq!(browser.current_url().await, format!("{site}echo"));
    assert_eq!(browser.text_of("#echo").await, "Ada likes blue");
    let cookies = browser.cookies().await;
    let seen = cookies.iter().find(|c| c.name() == "seen").unwrap();
    assert_eq!(seen.value(), "yes");
    assert_eq!(seen.http_only(), Some(true));

    browser.goto(&format!("{site}cookie")).await;
    assert_eq!(browser.text_of("p").await, "seen=yes");
    browser.delete_all_cookies().await;
    browser.reload().await;
    assert_eq!(browser.texts_of("p").await, ["no cookie"]);
    assert!(browser.page_source().await.contains("<p>no cookie</p>"));

    browser.goto(&site).await;
    browser.click("a[href='/cookie']").await;
    assert_eq!(browser.current_url().await, format!("{site}cookie"));
}

/// A small site on loopback; answers its root URL.
async fn page_server() -> String {
    const PAGE: &str = r#"<!doctype html>
<title>form</title>
<p id="scripted">before scripts</p>
<form method="post" action="/echo">
  <input name="who">
  <select name="color"><option value="red">red</option><option value="blue">blue</option></select>
  <button>Send</button>
</form>
<a href="/cookie">cookie</a>
<script>
  setTimeout(() => { document.getElementById("scripted").textContent = "after scripts"; }, 200);
</script>
"#;
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/echo",
            post(
                |axum::Form(form): axum::Form<HashMap<String, String>>| async move {
                    (
                        [("set-cookie", "seen=yes; Path=/; HttpOnly; SameSite=Strict")],
                        Html(format!(
                            "<p id=\"echo\">{} likes {}</p>",
                            form["who"], form["color"]
                        )),
                    )
                        .into_response()
                },
            ),
        )
        .route(
            "/cookie",
            get(|headers: HeaderMap| async move {
                let cookie = headers
                    .get("cookie")
                    .map_or("no cookie", |v| v.to_str().unwrap())
                    .to_string();
                Html(format!("<p>{cookie}</p>"))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}
