//! The differential flame graph and the HTML report, on real `runtime/pprof`
//! profiles (`tests/data/html/`): an A/A pair stays neutral, the function
//! that regressed is red in the frame tree and in the SVG, and in a real
//! headless Chromium the culprit's frame is visible, labelled with its name
//! and red. The page's screenshot is kept under `target/tmp/` (path printed).
//!
//! Chromium: `$CHROMIUM`, else `chromium`, `chromium-browser` or
//! `google-chrome` on PATH (`cargo xtask test` installs Debian's
//! `chromium`). Without a browser the browser test is skipped, except under
//! `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diff::budgets::Budgets;
use diff::compare::Comparison;
use diff::diffgraph::{self, DiffGraphOptions, FrameTree};
use diff::gate::{Gate, GateReport, Verdict};
use diff::normalize::{NormalizeOptions, Normalizer, Scale};
use diff::Profile;

/// The function the candidate changed.
const CHANGED: &str = "main.auditTrail";

fn data(side: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/html")
        .join(side)
}

/// The profiles in directory `dir`, named by their paths.
fn load(dir: &Path) -> Vec<(String, Profile)> {
    diff::input::load_many(&[dir.to_path_buf()])
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .into_iter()
        .map(|(p, prof)| (p.display().to_string(), prof))
        .collect()
}

/// Runs the gate (default budgets and normalization) on the profiles in
/// the directories `base` and `cand`; calls `f` with its report, its
/// primary comparison and the gate's scale for that comparison.
fn with_gate<R>(
    base: &Path,
    cand: &Path,
    f: impl FnOnce(GateReport, &Comparison, Option<&Scale>) -> R,
) -> R {
    let (b, c) = (load(base), load(cand));
    let norm = Normalizer::new(NormalizeOptions::default());
    let br: Vec<(String, &Profile)> = b.iter().map(|(n, p)| (n.clone(), p)).collect();
    let cr: Vec<(String, &Profile)> = c.iter().map(|(n, p)| (n.clone(), p)).collect();
    let mut gate = Gate::new(br, cr, &norm, None);
    let rep = gate.run(&Budgets::default()).expect("gate runs");
    let (cmp, _) = gate.primary().expect("primary comparison");
    f(rep, cmp, gate.primary_scale())
}

/// Gate report and frame tree of `base` vs `cand` (under tests/data/html).
fn run_gate(base: &str, cand: &str) -> (GateReport, FrameTree) {
    with_gate(&data(base), &data(cand), |rep, cmp, scale| {
        let opts = DiffGraphOptions {
            candidate_scale: diffgraph::candidate_scale(cmp, scale),
            ..Default::default()
        };
        (rep, FrameTree::build(cmp, &opts))
    })
}

fn is_red(c: (u8, u8, u8)) -> bool {
    c.0 >= 180 && (c.0 as i32 - c.1 as i32) >= 60 && (c.0 as i32 - c.2 as i32) >= 60
}

#[test]
fn aa_pair_flame_graph_is_all_neutral() {
    let (_, tree) = run_gate("base", "aa");
    assert!(tree.tested >= 5, "only {} frames tested", tree.tested);
    let coloured: Vec<_> = tree
        .nodes
        .iter()
        .filter(|n| n.change.is_some())
        .map(|n| (&n.name, n.incl.delta, n.incl.q_value))
        .collect();
    assert!(coloured.is_empty(), "A/A frames coloured: {coloured:?}");
}

#[test]
fn regressed_function_is_red_in_the_tree_and_the_svg() {
    let (_, tree) = run_gate("base", "cand");
    let n = tree
        .nodes
        .iter()
        .filter(|n| n.name == CHANGED)
        .max_by(|a, b| a.incl.candidate.total_cmp(&b.incl.candidate))
        .expect("frame of the changed function");
    assert!(
        n.incl.delta > 0.3,
        "inclusive growth of tens of points: {:?}",
        n.incl
    );
    let c = n.color(tree.color_by);
    assert!(is_red((c.r, c.g, c.b)), "{CHANGED} colour {c:?}");
    assert!(n.change.is_some_and(|x| x > 0.5), "{:?}", n.change);

    // SVG (inferno): the name comes first, the statistics sit in the last
    // parenthesised group of the title (inferno's script strips it for the
    // label), and the frame is red.
    let mut svg = Vec::new();
    diffgraph::render_tree(&tree, &DiffGraphOptions::default(), &mut svg).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    let mut found = false;
    for g in svg.split("<g><title>").skip(1) {
        let title = &g[..g.find("</title>").unwrap()];
        let open = title.rfind(" (").expect("statistics group");
        let stats = &title[open + 2..];
        assert!(
            !stats.contains('(') && stats.ends_with(')'),
            "label would include statistics: {title}"
        );
        if &title[..open] == CHANGED {
            assert!(stats.contains("inclusive"), "{title}");
            let fill = g.split("fill=\"rgb(").nth(1).unwrap();
            let v: Vec<u8> = fill[..fill.find(')').unwrap()]
                .split(',')
                .map(|x| x.parse().unwrap())
                .collect();
            assert!(is_red((v[0], v[1], v[2])), "{title}: rgb{v:?}");
            found = true;
        }
    }
    assert!(found, "no frame titled {CHANGED} in the SVG");
    assert!(svg.contains("red = grew"), "legend in the subtitle");
}

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let ok = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(PathBuf::from(name));
        }
    }
    None
}

/// Run headless Chromium with `args` and a fresh profile directory; kill it
/// (by PID) after `limit`. Returns stdout.
fn run_chromium(bin: &Path, work: &Path, args: &[String], limit: Duration) -> String {
    let profile = work.join(format!("chrome-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    let out_path = work.join("chromium.stdout");
    let err_path = work.join("chromium.stderr");
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_dir_all(&profile);
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        Some(s) if s.success() => std::fs::read_to_string(&out_path).unwrap(),
        Some(s) => panic!("{} exited with {s}: {stderr}", bin.display()),
        None => panic!("{} did not finish in {limit:?}: {stderr}", bin.display()),
    }
}

/// Probe run in the browser after the page's own script: for every
/// culprit, where its primary frame is, what covers the frame's centre, its
/// computed colour and the extent of its label; then hover, click-to-zoom,
/// search and the baseline view on the frame of `__CHANGED__`.
const PROBE: &str = r#"<script>(function(){
var o={culprits:[]};
o.culprit_frames=document.querySelectorAll('#flame .fr.culprit').length;
o.frames=document.querySelectorAll('#flame .fr').length;
o.viewport=[innerWidth,innerHeight];
var D=JSON.parse(document.getElementById('pd-data').textContent);
D.culprits.forEach(function(c,ci){
 var e=document.querySelector('#flame .fr[data-primary="'+ci+'"]');
 var x={label:c.label,present:!!e};
 if(e){
  var r=e.getBoundingClientRect(), s=getComputedStyle(e);
  x.rect=[r.left,r.top,r.width,r.height];
  x.name=e.getAttribute('data-name'); x.text=e.textContent;
  x.bg=s.backgroundColor; x.opacity=s.opacity; x.visibility=s.visibility;
  var h=document.elementFromPoint(r.left+r.width/2,r.top+r.height/2);
  x.hit=!!(h&&h.closest&&h.closest('.fr')===e);
  var g=document.createRange(); g.selectNodeContents(e); var t=g.getBoundingClientRect();
  x.text_rect=[t.left,t.right];
 }
 o.culprits.push(x);
});
var fl=document.getElementById('flame'), tip=document.getElementById('tip');
o.flame_width=fl.clientWidth;
var sel='#flame .fr.culprit[data-name="__CHANGED__"]';
var e=document.querySelector(sel);
if(e){
 var c=e.getBoundingClientRect();
 e.dispatchEvent(new MouseEvent('mousemove',{bubbles:true,clientX:c.left+c.width/2,clientY:c.top+5}));
 o.tip=tip.hidden?'':tip.textContent;
 e.dispatchEvent(new MouseEvent('click',{bubbles:true}));
 var z=document.querySelector(sel);
 o.zoomed_width=z?z.getBoundingClientRect().width:0;
 document.getElementById('reset').click();
}
var s=document.getElementById('search'); s.value='Sprintf'; s.dispatchEvent(new Event('input',{bubbles:true}));
o.matches=document.querySelectorAll('#flame .fr.match').length; o.matched=document.getElementById('matched').textContent;
s.value=''; s.dispatchEvent(new Event('input',{bubbles:true}));
document.querySelector('input[name=view][value=base]').click();
var b=document.querySelector(sel);
o.base_view_width=b?b.getBoundingClientRect().width:0;
document.querySelector('input[name=view][value=diff]').click();
var d=document.querySelector(sel);
o.diff_view_width=d?d.getBoundingClientRect().width:0;
document.querySelector('input[name=view][value=cand]').click();
document.querySelector('input[name=color][value=self]').click();
var sc=document.querySelector(sel);
o.self_color={bg:sc?getComputedStyle(sc).backgroundColor:'',legend:document.getElementById('legend-text').textContent};
document.querySelector('input[name=color][value=inclusive]').click();
var li=document.querySelector('ol.path li:last-child');
if(li){
 var want=li.querySelector('code').textContent; li.click();
 var zs=Array.prototype.filter.call(document.querySelectorAll('#flame .fr'),function(f){return f.getAttribute('data-name')===want&&!f.classList.contains('anc');});
 o.path_click={name:want,width:zs.length?zs[0].getBoundingClientRect().width:0};
}
var p=document.createElement('pre'); p.id='probe'; p.textContent=JSON.stringify(o); document.body.appendChild(p);
})();</script>"#;

/// A frame's label in the page: the function without its package path.
fn short_label(name: &str) -> &str {
    let head = name.find('(').map_or(name, |p| &name[..p]);
    match head.rfind('/') {
        Some(k) => &name[k + 1..],
        None => name,
    }
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn rgb(s: &str) -> (u8, u8, u8) {
    let inner = s
        .trim()
        .trim_start_matches("rgba(")
        .trim_start_matches("rgb(")
        .trim_end_matches(')');
    let v: Vec<u8> = inner
        .split(',')
        .take(3)
        .map(|x| x.trim().parse().unwrap_or(0))
        .collect();
    (v[0], v[1], v[2])
}

#[test]
fn html_report_shows_the_culprit_frame_named_and_red_in_chromium() {
    let (rep, tree) = run_gate("base", "cand");
    assert!(
        !rep.culprits.is_empty(),
        "the gate named no culprit for the per-call Sprintf regression"
    );
    let page = diff::report::html(&rep, Some(&tree));
    // Self-contained: no network resources.
    for bad in [
        "<script src",
        "<link",
        "@import",
        "http://",
        "https://",
        "url(",
    ] {
        assert!(!page.contains(bad), "page references {bad:?}");
    }
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("profdiff-html");
    std::fs::create_dir_all(&work).unwrap();
    let report = work.join("report.html");
    std::fs::write(&report, &page).unwrap();
    println!("report: {}", report.display());

    let Some(bin) = chromium() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("no chromium found and CI=true: install it (`cargo xtask test` runs `apt-get install -y chromium`) or set CHROMIUM");
        }
        eprintln!("SKIP: no chromium (set CHROMIUM or install it; `cargo xtask test` does)");
        return;
    };
    let probed = work.join("report-probe.html");
    let probe = PROBE.replace("__CHANGED__", CHANGED);
    std::fs::write(&probed, page.replace("</body>", &format!("{probe}</body>"))).unwrap();
    let dom = run_chromium(
        &bin,
        &work,
        &[
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            format!("file://{}", probed.display()),
        ],
        Duration::from_secs(120),
    );
    let json = dom
        .split("<pre id=\"probe\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_else(|| panic!("no probe output in the DOM dump ({} bytes)", dom.len()));
    let v: serde_json::Value = serde_json::from_str(&unescape(json)).unwrap();
    println!("probe: {v}");
    assert!(v["frames"].as_u64().unwrap() > 5, "frames rendered: {v}");
    let vp = floats(&v["viewport"]);
    let culprits = v["culprits"].as_array().unwrap();
    assert_eq!(culprits.len(), rep.culprits.len(), "{v}");
    for (c, rc) in culprits.iter().zip(&rep.culprits) {
        assert_eq!(c["present"], true, "culprit frame not drawn: {c}");
        assert_eq!(c["name"], c["label"], "{c}");
        // Inconclusive culprits (e.g. GC work a few points up) may be narrow
        // and grey; every failing one must be readable and red.
        if rc.verdict != Verdict::Fail {
            continue;
        }
        // The whole label (the function name) is shown, inside the frame,
        // for the culprit that changed and for every failing culprit wide
        // enough to hold it (at least 8 px per character: a few points of
        // garbage-collector work beside a 250-point regression is a sliver
        // at full width, named in its tooltip and readable after a click).
        let label = c["label"].as_str().unwrap();
        let r = floats(&c["rect"]);
        if label == CHANGED || r[2] >= 8.0 * short_label(label).chars().count() as f64 {
            assert_eq!(
                c["text"],
                short_label(label),
                "label of the culprit frame: {c}"
            );
        }
        assert!(
            r[0] >= 0.0 && r[1] >= 0.0 && r[0] + r[2] <= vp[0] + 0.5 && r[1] + r[3] <= vp[1],
            "culprit frame outside the first screen: {c}"
        );
        let t = floats(&c["text_rect"]);
        assert!(
            t[1] <= r[0] + r[2] + 0.5 && (t[1] > t[0] || c["text"] == ""),
            "label overflows its frame: {c}"
        );
        assert_eq!(c["hit"], true, "culprit frame covered by something: {c}");
        assert_eq!(c["visibility"], "visible", "{c}");
        assert_eq!(c["opacity"], "1", "{c}");
        let bg = rgb(c["bg"].as_str().unwrap());
        assert!(is_red(bg), "culprit frame is not red: {bg:?} ({c})");
    }
    // The function that changed is among the culprits (a frame or the
    // callee of a new edge).
    assert!(
        culprits
            .iter()
            .zip(&rep.culprits)
            .any(|(c, rc)| c["label"] == CHANGED && rc.verdict == Verdict::Fail),
        "no culprit names {CHANGED}: {v}"
    );

    // Interaction on its frame: hover shows the statistics, a click zooms the
    // frame to the full width, search marks matches, the baseline view
    // shrinks it (the function did almost nothing in the baseline).
    let tip = v["tip"].as_str().unwrap_or("");
    assert!(
        tip.contains(CHANGED) && tip.contains("inclusive") && tip.contains("q = "),
        "tooltip: {v}"
    );
    let fw = v["flame_width"].as_f64().unwrap();
    assert!(
        v["zoomed_width"].as_f64().unwrap() >= fw - 1.0,
        "click did not zoom: {v}"
    );
    assert!(v["matches"].as_u64().unwrap() >= 1, "search: {v}");
    assert!(
        v["matched"].as_str().unwrap().starts_with("matched "),
        "search: {v}"
    );
    assert!(
        v["base_view_width"].as_f64().unwrap() < 0.1 * fw,
        "baseline view: {v}"
    );
    // Diff width (both sides): visible, narrower than in the candidate view.
    let dw = v["diff_view_width"].as_f64().unwrap();
    assert!(dw > 0.1 * fw && dw < fw - 1.0, "diff view: {v}");
    // Colour by self change: the function's own (self) time barely changed,
    // so its frame is not red there, and the legend says what it shows.
    let sc = &v["self_color"];
    assert!(
        !is_red(rgb(sc["bg"].as_str().unwrap())),
        "self colouring: {sc}"
    );
    assert!(
        sc["legend"].as_str().unwrap().contains("self value"),
        "{sc}"
    );
    // A culprit path step zooms the graph to that frame.
    assert!(
        v["path_click"]["width"].as_f64().unwrap() >= fw - 1.0,
        "path step click: {v}"
    );

    let shot = work.join("report.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &bin,
        &work,
        &[
            "--virtual-time-budget=5000".into(),
            format!("--screenshot={}", shot.display()),
            format!("file://{}", report.display()),
        ],
        Duration::from_secs(120),
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
    println!("screenshot: {}", shot.display());
}

/// Regression: inferno rejects folded lines that are not sorted as strings,
/// and a name that is a prefix of its sibling's (`f` and `f.x`, with `.`
/// sorting before `;`) splits a frame in two; every frame must still get
/// its own node's tooltip and colour.
#[test]
fn svg_frames_map_to_nodes_when_names_are_prefixes_of_siblings() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("profdiff-prefix-names");
    let _ = std::fs::remove_dir_all(&dir);
    for (side, grow) in [("base", 1), ("cand", 30)] {
        std::fs::create_dir_all(dir.join(side)).unwrap();
        for run in 1..=3 {
            let text = format!(
                "main;f;g 200\nmain;f 100\nmain;f.x;h {}\nmain;f.x 150\nmain;f;k 120\nmain;z 300\n",
                50 * grow + run
            );
            std::fs::write(dir.join(side).join(format!("run{run}.folded")), text).unwrap();
        }
    }
    let tree = with_gate(&dir.join("base"), &dir.join("cand"), |_, cmp, _| {
        FrameTree::build(cmp, &DiffGraphOptions::default())
    });
    let mut svg = Vec::new();
    diffgraph::render_tree(&tree, &DiffGraphOptions::default(), &mut svg).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    let titles: Vec<&str> = svg
        .split("<g><title>")
        .skip(1)
        .map(|g| &g[..g.find("</title>").unwrap()])
        .collect();
    // Every frame carries our tooltip (inferno's own ends in "%)").
    for t in &titles {
        assert!(t.contains("| inclusive "), "frame without a node: {t}");
    }
    // `f` is split around `f.x` by the string order: both parts are `f`.
    assert_eq!(titles.iter().filter(|t| t.starts_with("f (")).count(), 2);
    // `h` under `f.x` grew 30-fold: red.
    let h = svg
        .split("<g><title>")
        .find(|g| g.starts_with("h ("))
        .expect("frame h");
    let fill = h.split("fill=\"rgb(").nth(1).unwrap();
    let v: Vec<u8> = fill[..fill.find(')').unwrap()]
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(is_red((v[0], v[1], v[2])), "h: rgb{v:?}");
}

/// With a compositional scale (candidate values in baseline units per
/// unit of work; the size factor taken here from an unchanged function) the
/// functions whose work per item did not change stay neutral while the
/// regression stays red; in plain shares the same functions are diluted
/// (blue).
#[test]
fn compositional_scale_keeps_unchanged_frames_neutral() {
    with_gate(&data("base"), &data("cand"), |_, cmp, _| {
        let widest = |t: &FrameTree, name: &str| -> usize {
            t.nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.name == name)
                .max_by(|a, b| a.1.incl.baseline.total_cmp(&b.1.incl.baseline))
                .map(|(i, _)| i)
                .unwrap_or_else(|| panic!("no frame {name}"))
        };
        let shares = FrameTree::build(cmp, &DiffGraphOptions::default());
        let h = &shares.nodes[widest(&shares, "main.hashItem")];
        assert!(
            h.change.is_some_and(|x| x < 0.0),
            "diluted in shares: {h:?}"
        );
        let size = h.incl.candidate / h.incl.baseline;

        let tree = FrameTree::build(
            cmp,
            &DiffGraphOptions {
                candidate_scale: size,
                ..Default::default()
            },
        );
        for name in ["main.hashItem", "main.parseItem", "main.sortVals"] {
            let n = &tree.nodes[widest(&tree, name)];
            assert!(n.change.is_none(), "{name} coloured: {:?}", n.incl);
        }
        let a = &tree.nodes[widest(&tree, CHANGED)];
        assert!(
            a.incl.delta > 1.0,
            "{CHANGED} in baseline units: {:?}",
            a.incl
        );
        let col = a.color(tree.color_by);
        assert!(is_red((col.r, col.g, col.b)), "{col:?}");
    });
}
