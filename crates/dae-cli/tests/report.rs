//! Pictures and reports, checked without a browser: every section is there, every image
//! decodes, nothing is fetched from the network. (scripts/report-screenshot.sh shows one in
//! headless Chromium.)

mod common;

use base64::Engine;
use common::*;
use serde_json::Value;

/// Checks that `svg` is a well-formed SVG document: one root element, every tag closed.
fn check_svg(svg: &str) {
    assert!(svg.trim_start().starts_with("<svg"), "not SVG: {}", &svg[..svg.len().min(60)]);
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find('<') {
        let j = rest[i..].find('>').expect("unterminated tag") + i;
        let tag = &rest[i + 1..j];
        rest = &rest[j + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let name: String = tag.trim_start_matches('/').chars().take_while(|c| !c.is_whitespace() && *c != '/').collect();
        if tag.starts_with('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "mismatched </{name}>");
        } else if !tag.ends_with('/') {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed tags: {stack:?}");
}

/// Decodes a PNG and returns its size.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut r = dec.read_info().expect("a PNG header");
    let mut buf = vec![0; r.output_buffer_size().expect("size")];
    r.next_frame(&mut buf).expect("the PNG's pixels decode");
    (r.info().width, r.info().height)
}

/// Every section id in the page, and every inline image decoded (panics if one does not).
fn check_report(html: &str) -> (Vec<String>, usize) {
    assert!(html.starts_with("<!doctype html>"));
    for banned in ["http://", "https://", "<script", "<link"] {
        assert!(!html.contains(banned), "the report must work offline: found {banned}");
    }
    let sections: Vec<String> = html.split("<section id=\"").skip(1).map(|s| s[..s.find('"').unwrap()].to_string()).collect();
    let mut images = 0;
    for part in html.split("<img ").skip(1) {
        let src = part.split("src=\"").nth(1).expect("an image has a src").split('"').next().unwrap();
        let (mime, data) = src.strip_prefix("data:").expect("inline image").split_once(";base64,").expect("base64 data");
        let bytes = base64::engine::general_purpose::STANDARD.decode(data).expect("valid base64");
        match mime {
            "image/png" => {
                let (w, h) = png_size(&bytes);
                assert!(w > 0 && h > 0);
            }
            "image/svg+xml" => check_svg(std::str::from_utf8(&bytes).expect("UTF-8 SVG")),
            other => panic!("unexpected image type {other}"),
        }
        images += 1;
    }
    (sections, images)
}

#[test]
fn demo_report_has_every_section_and_image() {
    let s = Scratch::new("report-demo");
    let dir = s.path("demo");
    let o = dae(["demo", "-o", dir.to_str().unwrap(), "--epochs", "1"]);
    assert_ok(&o);
    assert!(stderr(&o).contains("report.html"), "the demo says where the report is");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let (sections, images) = check_report(&html);
    for want in ["configuration", "data", "curves", "filters", "reconstructions", "errors"] {
        assert!(sections.iter().any(|s| s == want), "section {want} missing: {sections:?}");
    }
    // Curves, filters, reconstructions, histogram, anomalies.
    assert_eq!(images, 5);
    assert!(html.contains("Top anomalies"));
}

#[test]
fn viz_commands_and_reports_for_every_model_kind() {
    let s = Scratch::new("viz");
    // 8×8 "images" as an IDX file, with labels.
    let n = 120;
    let mut pixels = Vec::new();
    let mut labels = vec![0u8, 0, 8, 1, 0, 0, 0, n as u8];
    for r in 0..n {
        let c = r % 3;
        labels.push(c as u8);
        pixels.extend((0..64).map(|j| if j % 3 == c { 200 + (r % 50) as u8 } else { (r * 7 % 40) as u8 }));
    }
    let x = s.write("img-idx3-ubyte", idx_images(n, 8, 8, &pixels));
    let y = s.write("lab-idx1-ubyte", &labels);
    let (xs, ys) = (x.to_str().unwrap(), y.to_str().unwrap());
    let ae = s.path("ae.safetensors");
    let log = s.path("log.jsonl");
    let rep = s.path("train-report.html");
    assert_ok(&dae(["train", xs, "-o", ae.to_str().unwrap(), "--hidden", "9", "--epochs", "3", "--val-fraction", "0.2", "--log-json", log.to_str().unwrap(), "--report", rep.to_str().unwrap(), "-q"]));
    // --log-json: one object per epoch.
    let lines: Vec<Value> = std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["epoch"], 3);
    assert!(lines[0]["train_loss"].as_f64().unwrap() > 0.0 && lines[0]["val_loss"].as_f64().is_some());
    // The rate as given (the default 0.1), not its f32 widened to f64 (0.10000000149011612).
    assert!(std::fs::read_to_string(&log).unwrap().contains("\"lr\":0.1,"), "{}", std::fs::read_to_string(&log).unwrap());
    // --report wrote the report of the trained model.
    let (sections, _) = check_report(&std::fs::read_to_string(&rep).unwrap());
    assert!(sections.contains(&"errors".to_string()));

    let out = s.path("filters.png");
    assert_ok(&dae(["viz", "filters", ae.to_str().unwrap(), "-o", out.to_str().unwrap(), "--units", "9"]));
    // 3×3 tiles of 8×8 pixels, drawn twice as large, with 1-pixel gaps.
    assert_eq!(png_size(&std::fs::read(&out).unwrap()), (3 * 16 + 2, 3 * 16 + 2));
    let out = s.path("recon.png");
    assert_ok(&dae(["viz", "reconstructions", ae.to_str().unwrap(), xs, "-o", out.to_str().unwrap(), "--rows", "4", "--noise", "masking:0.5"]));
    assert_eq!(png_size(&std::fs::read(&out).unwrap()), (4 * 16 + 3 * 2, 3 * 16 + 2 * 2));
    for ext in ["png", "svg"] {
        let out = s.path(&format!("curves.{ext}"));
        assert_ok(&dae(["viz", "curves", ae.to_str().unwrap(), "-o", out.to_str().unwrap()]));
        let bytes = std::fs::read(&out).unwrap();
        if ext == "png" {
            png_size(&bytes);
        } else {
            check_svg(std::str::from_utf8(&bytes).unwrap());
        }
    }

    // A stack and a classifier.
    let stack = s.path("stack.safetensors");
    assert_ok(&dae(["pretrain", xs, "-o", stack.to_str().unwrap(), "--layers", "10,6", "--epochs", "2", "-q"]));
    let clf = s.path("clf.safetensors");
    assert_ok(&dae(["finetune", stack.to_str().unwrap(), xs, "--labels", ys, "-o", clf.to_str().unwrap(), "--epochs", "3", "-q"]));
    for (model, labels, want) in [
        (&stack, None, vec!["curves", "filters", "reconstructions", "errors"]),
        (&clf, Some(ys), vec!["curves", "filters", "confusion"]),
    ] {
        let out = s.path("r.html");
        let mut args = vec!["report", model.to_str().unwrap(), xs, "-o", out.to_str().unwrap(), "-q"];
        if let Some(l) = labels {
            args.extend(["--labels", l]);
        }
        assert_ok(&dae(&args));
        let html = std::fs::read_to_string(&out).unwrap();
        let (sections, images) = check_report(&html);
        for w in want {
            assert!(sections.iter().any(|s| s == w), "{model:?}: section {w} missing");
        }
        assert!(images >= 2);
        if labels.is_some() {
            assert!(html.contains("Accuracy <b>"));
        }
    }
    // A report with no data still has the model's own sections.
    let out = s.path("bare.html");
    assert_ok(&dae(["report", ae.to_str().unwrap(), "-o", out.to_str().unwrap(), "-q"]));
    let (sections, _) = check_report(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(sections, vec!["configuration", "data", "curves", "filters"]);
}

#[test]
fn filters_of_data_that_are_not_images_are_refused() {
    let s = Scratch::new("viz-bad");
    let data = s.write("t.csv", unit_csv(30, 10));
    let m = s.path("m.safetensors");
    assert_ok(&dae(["train", data.to_str().unwrap(), "-o", m.to_str().unwrap(), "--hidden", "4", "--epochs", "1", "-q"]));
    let out = s.path("f.png");
    let o = dae(["viz", "filters", m.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_fails(&o, 2, &["m.safetensors", "not images", "--shape"]);
    let o = dae(["viz", "filters", m.to_str().unwrap(), "-o", out.to_str().unwrap(), "--shape", "3x3"]);
    assert_fails(&o, 2, &["--shape", "3×3 = 9 pixels", "10 inputs"]);
    assert_ok(&dae(["viz", "filters", m.to_str().unwrap(), "-o", out.to_str().unwrap(), "--shape", "2x5"]));
    let o = dae(["viz", "curves", m.to_str().unwrap(), "-o", s.path("c.jpg").to_str().unwrap()]);
    assert_fails(&o, 2, &[".png or .svg"]);
    // And the report says so instead of failing.
    let rep = s.path("r.html");
    assert_ok(&dae(["report", m.to_str().unwrap(), data.to_str().unwrap(), "-o", rep.to_str().unwrap(), "-q"]));
    assert!(std::fs::read_to_string(&rep).unwrap().contains("not images"));
}
