//! The stacked-autoencoder commands end to end: pretrain, finetune (pretrained and from
//! scratch, labels from files or a CSV column, classification and regression), predict,
//! evaluate, encode of any layer; and their bad input.

mod common;

use common::*;
use serde_json::Value;

/// A CSV of 4 prototype classes (16 features in [0, 1]) with a `label` column, and the labels.
fn labelled_csv(rows: usize) -> (String, Vec<u32>) {
    let mut s = String::from((0..16).map(|j| format!("f{j}")).collect::<Vec<_>>().join(",") + ",label\n");
    let mut labels = Vec::new();
    for r in 0..rows {
        let c = (r * 7 % 4) as u32;
        labels.push(c);
        let row: Vec<String> = (0..16)
            .map(|j| {
                let on = (j / 4) as u32 == c;
                let jitter = ((r * 13 + j * 5) % 10) as f32 / 50.0;
                format!("{:.3}", if on { 0.8 + jitter } else { jitter })
            })
            .collect();
        s += &format!("{},{c}\n", row.join(","));
    }
    (s, labels)
}

fn features_csv(rows: usize) -> (String, String) {
    let (full, labels) = labelled_csv(rows);
    let features: String = full.lines().map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n").collect();
    let labels: String = std::iter::once("label\n".to_string()).chain(labels.iter().map(|c| format!("{c}\n"))).collect();
    (features, labels)
}

fn json_of(o: &std::process::Output) -> Value {
    assert_ok(o);
    serde_json::from_str(&stdout(o)).expect("one JSON object")
}

#[test]
fn pretrain_finetune_predict_evaluate_encode() {
    let s = Scratch::new("sda");
    let (features, labels) = features_csv(240);
    let x = s.write("x.csv", features);
    let y = s.write("y.csv", labels);
    let stack = s.path("stack.safetensors");
    assert_ok(&dae([
        "pretrain", x.to_str().unwrap(), "-o", stack.to_str().unwrap(), "--layers", "12,8",
        "--noise", "masking:0.1,0.2", "--epochs", "3,2", "--lr", "0.1,0.05", "--batch", "16", "-q",
    ]));
    let v = json_of(&dae(["inspect", stack.to_str().unwrap(), "--json"]));
    assert_eq!(v["kind"], "stack");
    assert_eq!(v["sizes"], serde_json::json!([16, 12, 8]));
    assert_eq!(v["layers"][1]["noise"], "masking:0.2");
    assert_eq!(v["train"][0]["epochs"], 3);
    assert_eq!(v["train"][1]["lr"], 0.05);
    assert_eq!(v["history"][1].as_array().unwrap().len(), 2);

    let clf = s.path("clf.safetensors");
    assert_ok(&dae([
        "finetune", stack.to_str().unwrap(), x.to_str().unwrap(), "--labels", y.to_str().unwrap(),
        "-o", clf.to_str().unwrap(), "--epochs", "15", "--batch", "16", "--lr", "0.5",
        "--dropout", "0.1", "--val-fraction", "0.2", "--patience", "30", "-q",
    ]));
    let v = json_of(&dae(["inspect", clf.to_str().unwrap(), "--json"]));
    assert_eq!(v["kind"], "classifier");
    assert_eq!(v["network"]["sizes"], serde_json::json!([16, 12, 8]));
    assert!(v["init"].as_str().unwrap().starts_with("pretrained"));
    let last = v["history"].as_array().unwrap().last().unwrap().clone();
    assert!(last["val_accuracy"].as_f64().unwrap() > 0.9, "{last}");

    let pred = s.path("pred.npy");
    assert_ok(&dae(["predict", clf.to_str().unwrap(), x.to_str().unwrap(), "-o", pred.to_str().unwrap(), "-q"]));
    let b = std::fs::read(&pred).unwrap();
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    assert!(std::str::from_utf8(&b[10..10 + hl]).unwrap().contains("'<i8'"), "classes as int64");
    let classes: Vec<i64> = b[10 + hl..].chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(classes.len(), 240);
    let proba = s.path("proba.npy");
    assert_ok(&dae(["predict", clf.to_str().unwrap(), x.to_str().unwrap(), "-o", proba.to_str().unwrap(), "--proba", "-q"]));
    let (shape, p) = read_f32_npy(&proba);
    assert_eq!(shape, vec![240, 4]);
    for (row, &c) in p.chunks(4).zip(&classes) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let argmax = (0..4).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        assert_eq!(argmax as i64, c);
    }

    let e = json_of(&dae(["evaluate", clf.to_str().unwrap(), x.to_str().unwrap(), "--labels", y.to_str().unwrap(), "--json"]));
    let (_, truth) = labelled_csv(240);
    let right = classes.iter().zip(&truth).filter(|(p, t)| **p == **t as i64).count();
    assert!((e["accuracy"].as_f64().unwrap() - right as f64 / 240.0).abs() < 1e-12);
    assert_eq!(e["confusion"].as_array().unwrap().len(), 4);
    assert_eq!(e["support"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum::<u64>(), 240);
    let o = dae(["evaluate", clf.to_str().unwrap(), x.to_str().unwrap(), "--labels", y.to_str().unwrap()]);
    assert_ok(&o);
    assert!(stdout(&o).contains("confusion matrix") && stdout(&o).contains("precision"));

    for (args, width) in [(vec!["--layer", "1"], 12), (vec!["--layer", "2"], 8), (vec![], 8), (vec!["--all-layers"], 20)] {
        let out = s.path("codes.npy");
        let mut all = vec!["encode", stack.to_str().unwrap(), x.to_str().unwrap(), "-o", out.to_str().unwrap(), "-q"];
        all.extend(args.iter().copied());
        assert_ok(&dae(&all));
        assert_eq!(read_f32_npy(&out).0, vec![240, width], "{args:?}");
    }
    // A classifier's hidden layers encode too.
    let out = s.path("h.npy");
    assert_ok(&dae(["encode", clf.to_str().unwrap(), x.to_str().unwrap(), "-o", out.to_str().unwrap(), "--layer", "1", "-q"]));
    assert_eq!(read_f32_npy(&out).0, vec![240, 12]);
    // All its layers side by side: layer 1's columns first, as --layer 1 gives them.
    let both = s.path("hh.npy");
    assert_ok(&dae(["encode", clf.to_str().unwrap(), x.to_str().unwrap(), "-o", both.to_str().unwrap(), "--all-layers", "-q"]));
    let ((shape, all), (_, first)) = (read_f32_npy(&both), read_f32_npy(&out));
    assert_eq!(shape, vec![240, 20]);
    assert!((0..240).all(|r| all[r * 20..r * 20 + 12] == first[r * 12..(r + 1) * 12]));
    let second_path = s.path("h2.npy");
    assert_ok(&dae(["encode", clf.to_str().unwrap(), x.to_str().unwrap(), "-o", second_path.to_str().unwrap(), "--layer", "2", "-q"]));
    let (_, second) = read_f32_npy(&second_path);
    assert!((0..240).all(|r| all[r * 20 + 12..(r + 1) * 20] == second[r * 8..(r + 1) * 8]));
    let o = dae(["encode", stack.to_str().unwrap(), x.to_str().unwrap(), "-o", out.to_str().unwrap(), "--layer", "3"]);
    assert_fails(&o, 2, &["--layer", "layers 1 to 2"]);
}

#[test]
fn label_column_of_the_data_and_from_scratch() {
    let s = Scratch::new("labelcol");
    let (full, _) = labelled_csv(200);
    let data = s.write("table.csv", full);
    let clf = s.path("clf.safetensors");
    assert_ok(&dae([
        "finetune", "--from-scratch", "--layers", "10", data.to_str().unwrap(), "--label-column", "label",
        "-o", clf.to_str().unwrap(), "--epochs", "20", "--batch", "10", "--lr", "0.5", "-q",
    ]));
    let v = json_of(&dae(["inspect", clf.to_str().unwrap(), "--json"]));
    assert_eq!(v["network"]["sizes"], serde_json::json!([16, 10]), "the label column is not a feature");
    assert_eq!(v["init"], "random");
    assert_eq!(v["label_column"], "label");
    // predict and evaluate drop the column, and evaluate reads the labels from it.
    let e = json_of(&dae(["evaluate", clf.to_str().unwrap(), data.to_str().unwrap(), "--json"]));
    assert!(e["accuracy"].as_f64().unwrap() > 0.9, "{e}");
    let pred = s.path("p.csv");
    assert_ok(&dae(["predict", clf.to_str().unwrap(), data.to_str().unwrap(), "-o", pred.to_str().unwrap(), "-q"]));
    assert_eq!(std::fs::read_to_string(&pred).unwrap().lines().count(), 200);
}

#[test]
fn per_class_keeps_the_first_rows_of_each_class() {
    let s = Scratch::new("perclass");
    let (features, labels) = features_csv(240);
    let x = s.write("x.csv", features);
    let y = s.write("y.csv", labels);
    let out = s.path("clf.safetensors");
    let o = dae([
        "finetune", "--from-scratch", "--layers", "6", x.to_str().unwrap(), "--labels", y.to_str().unwrap(),
        "-o", out.to_str().unwrap(), "--epochs", "2", "--per-class", "5",
    ]);
    assert_ok(&o);
    assert!(stderr(&o).contains("on 20 rows"), "4 classes × 5 rows: {}", stderr(&o));
    let o = dae(["finetune", "--from-scratch", "--layers", "6", x.to_str().unwrap(), "--labels", y.to_str().unwrap(), "-o", out.to_str().unwrap(), "--per-class", "0"]);
    assert_fails(&o, 2, &["--per-class", "at least 1"]);
}

#[test]
fn regression_targets() {
    let s = Scratch::new("regress");
    let mut x = String::new();
    let mut y = String::new();
    for r in 0..200 {
        let a = (r % 10) as f32 / 10.0;
        let b = (r % 7) as f32 / 7.0;
        x += &format!("{a},{b}\n");
        y += &format!("{},{}\n", a + b, a - b);
    }
    let xp = s.write("x.csv", x);
    let yp = s.write("y.csv", y);
    let m = s.path("reg.safetensors");
    assert_ok(&dae([
        "finetune", "--from-scratch", "--layers", "8", "--activation", "tanh", xp.to_str().unwrap(),
        "--labels", yp.to_str().unwrap(), "--regression", "-o", m.to_str().unwrap(), "--epochs", "40",
        "--batch", "10", "--lr", "0.05", "-q",
    ]));
    let out = s.path("pred.npy");
    assert_ok(&dae(["predict", m.to_str().unwrap(), xp.to_str().unwrap(), "-o", out.to_str().unwrap(), "-q"]));
    let (shape, p) = read_f32_npy(&out);
    assert_eq!(shape, vec![200, 2]);
    let err: f32 = p.chunks(2).enumerate().map(|(r, v)| {
        let a = (r % 10) as f32 / 10.0;
        let b = (r % 7) as f32 / 7.0;
        (v[0] - (a + b)).powi(2) + (v[1] - (a - b)).powi(2)
    }).sum::<f32>() / 200.0;
    assert!(err < 0.01, "mean squared error {err}");
    let o = dae(["evaluate", m.to_str().unwrap(), xp.to_str().unwrap(), "--labels", yp.to_str().unwrap()]);
    assert_fails(&o, 2, &["regressor", "classifiers"]);
}

#[test]
fn bad_labels_and_mismatched_models() {
    let s = Scratch::new("sda-bad");
    let (features, _) = features_csv(40);
    let x = s.write("x.csv", features);
    let stack = s.path("stack.safetensors");
    assert_ok(&dae(["pretrain", x.to_str().unwrap(), "-o", stack.to_str().unwrap(), "--layers", "6", "--epochs", "1", "-q"]));
    let out = s.path("clf.safetensors");
    let ft = |labels: &std::path::Path, extra: &[&str]| {
        let mut a = vec!["finetune", stack.to_str().unwrap(), x.to_str().unwrap(), "--labels", labels.to_str().unwrap(), "-o", out.to_str().unwrap(), "--epochs", "1"];
        a.extend_from_slice(extra);
        dae(&a)
    };
    let short = s.write("short.csv", (0..39).map(|i| format!("{}\n", i % 4)).collect::<String>());
    assert_fails(&ft(&short, &[]), 2, &["short.csv", "39 labels for 40 rows"]);
    let mut neg: Vec<String> = (0..40).map(|i| format!("{}", i % 4)).collect();
    neg[7] = "-1".into();
    let negp = s.write("neg.csv", neg.join("\n"));
    assert_fails(&ft(&negp, &[]), 2, &["neg.csv", "line 8", "label -1 is negative"]);
    let mut frac: Vec<String> = (0..40).map(|i| format!("{}", i % 4)).collect();
    frac[2] = "1.5".into();
    let fracp = s.write("frac.csv", frac.join("\n"));
    assert_fails(&ft(&fracp, &[]), 2, &["frac.csv", "line 3", "1.5 is not a whole number"]);
    let good = s.write("good.csv", (0..40).map(|i| format!("{}\n", i % 4)).collect::<String>());
    assert_fails(&ft(&good, &["--classes", "3"]), 2, &["good.csv", "label 3 is beyond", "3 classes"]);
    // IDX labels: a label beyond the classifier's classes at evaluation.
    assert_ok(&ft(&good, &["-q"]));
    let mut idx = vec![0u8, 0, 8, 1, 0, 0, 0, 40];
    idx.extend((0..40).map(|i| if i == 5 { 12 } else { (i % 4) as u8 }));
    let idxp = s.write("labels-idx1-ubyte", &idx);
    let o = dae(["evaluate", out.to_str().unwrap(), x.to_str().unwrap(), "--labels", idxp.to_str().unwrap()]);
    assert_fails(&o, 2, &["labels-idx1-ubyte", "row 6", "label 12 is beyond the 4 classes of the classifier"]);
    // NPY integer labels are read as labels.
    let npy = s.write("y.npy", npy_bytes("<i8", &[40], false, &(0..40).flat_map(|i| ((i % 4) as i64).to_le_bytes()).collect::<Vec<u8>>()));
    assert_ok(&dae(["evaluate", out.to_str().unwrap(), x.to_str().unwrap(), "--labels", npy.to_str().unwrap()]));

    // Data whose width does not match the stack.
    let wide = s.write("wide.csv", unit_csv(40, 20));
    let o = dae(["finetune", stack.to_str().unwrap(), wide.to_str().unwrap(), "--labels", good.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_fails(&o, 2, &["wide.csv", "20 columns", "expects 16"]);
    // finetune given a file that is not a stack; evaluate given a model that is not a classifier.
    let ae = s.path("ae.safetensors");
    assert_ok(&dae(["train", x.to_str().unwrap(), "-o", ae.to_str().unwrap(), "--hidden", "3", "--epochs", "1", "-q"]));
    let o = dae(["finetune", ae.to_str().unwrap(), x.to_str().unwrap(), "--labels", good.to_str().unwrap(), "-o", s.path("z").to_str().unwrap()]);
    assert_fails(&o, 2, &["ae.safetensors", "autoencoder model", "needs a stack"]);
    let o = dae(["evaluate", stack.to_str().unwrap(), x.to_str().unwrap(), "--labels", good.to_str().unwrap()]);
    assert_fails(&o, 2, &["stack.safetensors", "stack model", "needs a classifier"]);
    let o = dae(["predict", ae.to_str().unwrap(), x.to_str().unwrap(), "-o", s.path("p.npy").to_str().unwrap()]);
    assert_fails(&o, 2, &["needs a classifier"]);
    // Argument mistakes.
    let o = dae(["finetune", x.to_str().unwrap(), "--labels", good.to_str().unwrap(), "-o", s.path("z").to_str().unwrap()]);
    assert_fails(&o, 2, &["STACK DATA"]);
    let o = dae(["finetune", "--from-scratch", x.to_str().unwrap(), "--labels", good.to_str().unwrap(), "-o", s.path("z").to_str().unwrap()]);
    assert_fails(&o, 2, &["--layers"]);
    let o = dae(["pretrain", x.to_str().unwrap(), "-o", s.path("z").to_str().unwrap(), "--layers", "8,4", "--epochs", "1,2,3"]);
    assert_fails(&o, 2, &["--epochs", "3 values for 2 layers"]);
    let o = dae(["finetune", stack.to_str().unwrap(), x.to_str().unwrap(), "-o", s.path("z").to_str().unwrap()]);
    assert_fails(&o, 2, &["--labels"]);
}

#[test]
fn shifted_and_mirrored_images() {
    // 4 classes of 6 × 6 images: class c is a bright 2 × 2 block in quadrant c. Trained with
    // --shift and --flip, the run says so and records it, and the draws follow the seed.
    let s = Scratch::new("augment");
    let (n, side) = (80usize, 6usize);
    let mut pixels = vec![0u8; n * side * side];
    let mut labels = vec![0u8, 0, 8, 1, 0, 0, 0, n as u8];
    for r in 0..n {
        let c = r % 4;
        labels.push(c as u8);
        let (y0, x0) = (1 + 3 * (c / 2), 1 + 3 * (c % 2));
        for (y, x) in [(y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)] {
            pixels[r * side * side + (y.min(5)) * side + x.min(5)] = 200 + (r % 50) as u8;
        }
    }
    let x = s.write("images-idx3-ubyte", idx_images(n, side, side, &pixels));
    let y = s.write("labels-idx1-ubyte", &labels);
    let out = s.path("clf.safetensors");
    let o = dae([
        "finetune", "--from-scratch", "--layers", "16", x.to_str().unwrap(), "--labels", y.to_str().unwrap(),
        "-o", out.to_str().unwrap(), "--epochs", "3", "--shift", "1", "--flip", "--seed", "3",
    ]);
    assert_ok(&o);
    assert!(stderr(&o).contains("images moved up to 1 pixel and mirrored"), "{}", stderr(&o));
    let o = dae(["inspect", out.to_str().unwrap()]);
    assert!(stdout(&o).contains("seed 3, images moved up to 1 pixel and mirrored"), "{}", stdout(&o));
    let v = json_of(&dae(["inspect", out.to_str().unwrap(), "--json"]));
    assert_eq!(v["train"]["augment"], serde_json::json!({ "shift": 1, "flip": true }), "{v}");
    // The same seed gives the same weights; another seed other draws.
    let again = s.path("again.safetensors");
    let other = s.path("other.safetensors");
    let args = |o: &std::path::Path, seed: &str| {
        dae(["finetune", "--from-scratch", "--layers", "16", x.to_str().unwrap(), "--labels", y.to_str().unwrap(), "-o", o.to_str().unwrap(), "--epochs", "3", "--shift", "1", "--flip", "--seed", seed, "-q"])
    };
    assert_ok(&args(&again, "3"));
    assert_ok(&args(&other, "4"));
    // The tensors of a safetensors file: what follows its header (which holds timings).
    let tensors = |p: &std::path::Path| {
        let b = std::fs::read(p).unwrap();
        let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        b[8 + n..].to_vec()
    };
    assert!(tensors(&out) == tensors(&again), "the same seed gave other weights");
    assert!(tensors(&out) != tensors(&other), "another seed gave the same weights");
    // Without augmentation the weights differ too (the draws are used).
    let plain = s.path("plain.safetensors");
    assert_ok(&dae(["finetune", "--from-scratch", "--layers", "16", x.to_str().unwrap(), "--labels", y.to_str().unwrap(), "-o", plain.to_str().unwrap(), "--epochs", "3", "--seed", "3", "-q"]));
    assert!(tensors(&out) != tensors(&plain), "--shift and --flip changed nothing");

    // Rows that are not images, and a shift as large as the images.
    let (features, csv_labels) = features_csv(40);
    let csv = s.write("x.csv", features);
    let yl = s.write("y.csv", csv_labels);
    let o = dae(["finetune", "--from-scratch", "--layers", "4", csv.to_str().unwrap(), "--labels", yl.to_str().unwrap(), "-o", out.to_str().unwrap(), "--shift", "2"]);
    assert_fails(&o, 2, &["x.csv", "--shift and --flip need images"]);
    let o = dae(["finetune", "--from-scratch", "--layers", "4", x.to_str().unwrap(), "--labels", y.to_str().unwrap(), "-o", out.to_str().unwrap(), "--shift", "6"]);
    assert_fails(&o, 2, &["--shift", "6 pixels is not smaller than the 6×6 images"]);
}
