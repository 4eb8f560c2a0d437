//! Every kind of bad input gives a clear message naming the file and the place, exit code 2, no
//! panic, and no partial output.

mod common;

use common::*;

/// Trains a small model on a unit-interval CSV of `cols` columns; returns its path.
fn small_model(s: &Scratch, cols: usize) -> std::path::PathBuf {
    let data = s.write("train.csv", unit_csv(40, cols));
    let model = s.path("m.safetensors");
    let o = dae(["train", data.to_str().unwrap(), "-o", model.to_str().unwrap(), "--hidden", "3", "--epochs", "1", "--quiet"]);
    assert_ok(&o);
    model
}

#[test]
fn missing_file() {
    let s = Scratch::new("missing");
    let out = s.path("m.safetensors");
    let o = dae(["train", "/nonexistent/data.csv", "-o", out.to_str().unwrap()]);
    assert_fails(&o, 2, &["/nonexistent/data.csv", "no such file"]);
    assert!(s.files().is_empty());
}

#[test]
fn truncated_idx_and_wrong_magic() {
    let s = Scratch::new("idx");
    let mut full = idx_images(3, 2, 2, &[7; 12]);
    full.truncate(full.len() - 5);
    let p = s.write("short-images-idx3-ubyte", &full);
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m").to_str().unwrap()]);
    assert_fails(&o, 2, &["short-images-idx3-ubyte", "truncated", "12 bytes", "holds 7"]);

    let mut bad = idx_images(3, 2, 2, &[7; 12]);
    bad[2] = 0x42;
    let p = s.write("bad-images-idx3-ubyte", &bad);
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m").to_str().unwrap()]);
    assert_fails(&o, 2, &["bad-images-idx3-ubyte", "magic number", "0x00004203"]);

    let p = s.write("header-only.idx", [0u8, 0, 8, 3, 0, 0]);
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m").to_str().unwrap()]);
    assert_fails(&o, 2, &["header-only.idx", "truncated"]);
    assert_eq!(s.files().len(), 3, "no output written: {:?}", s.files());
}

#[test]
fn absurd_idx_header_is_refused_before_allocating() {
    let s = Scratch::new("huge");
    let mut v = vec![0, 0, 8, 3];
    for d in [1_000_000_000u32, 1000, 1000] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    let p = s.write("huge-images-idx3-ubyte", &v);
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m").to_str().unwrap()]);
    assert_fails(&o, 2, &["huge-images-idx3-ubyte", "memory"]);
}

#[test]
fn npy_unsupported_dtype_and_fortran_order() {
    let s = Scratch::new("npy");
    let p = s.write("complex.npy", npy_bytes("<c8", &[2, 2], false, &[0; 32]));
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m").to_str().unwrap()]);
    assert_fails(&o, 2, &["complex.npy", "descr", "unsupported dtype '<c8'"]);

    let p = s.write("fortran.npy", npy_bytes("<f4", &[2, 2], true, &[0; 16]));
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m").to_str().unwrap()]);
    assert_fails(&o, 2, &["fortran.npy", "fortran_order", "Fortran"]);

    let p = s.write("short.npy", &npy_bytes("<f4", &[4, 4], false, &[0; 16]));
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m").to_str().unwrap()]);
    assert_fails(&o, 2, &["short.npy", "truncated"]);
}

#[test]
fn ragged_and_non_numeric_csv() {
    let s = Scratch::new("csv");
    let p = s.write("ragged.csv", "0.1,0.2,0.3\n0.4,0.5,0.6\n0.7,0.8\n");
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m").to_str().unwrap()]);
    assert_fails(&o, 2, &["ragged.csv", "line 3", "2 fields, but line 1 has 3"]);

    let p = s.write("text.csv", "a,b\n0.1,0.2\n0.3,abc\n");
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m").to_str().unwrap()]);
    assert_fails(&o, 2, &["text.csv", "line 3, column 2", "'abc' is not a number"]);
}

#[test]
fn nan_and_inf_in_data() {
    let s = Scratch::new("nan");
    let p = s.write("nan.csv", "0.1,0.2\n0.3,nan\n");
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m").to_str().unwrap()]);
    assert_fails(&o, 2, &["nan.csv", "line 2, column 2", "not finite"]);

    let p = s.write("inf.npy", f32_npy(2, 2, &[0.1, f32::INFINITY, 0.2, 0.3]));
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m").to_str().unwrap()]);
    assert_fails(&o, 2, &["inf.npy", "row 1, column 2", "not finite"]);
}

#[test]
fn empty_data() {
    let s = Scratch::new("empty");
    for (name, bytes) in [
        ("empty.csv", b"".to_vec()),
        ("header-only.csv", b"a,b,c\n".to_vec()),
        ("zero.npy", f32_npy(0, 3, &[])),
    ] {
        let p = s.write(name, bytes);
        let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m").to_str().unwrap()]);
        assert_fails(&o, 2, &[name, "empty"]);
    }
}

#[test]
fn model_width_does_not_match_data() {
    let s = Scratch::new("width");
    let model = small_model(&s, 6);
    let data = s.write("wide.csv", unit_csv(5, 8));
    let out = s.path("codes.npy");
    for cmd in ["encode", "reconstruct", "score"] {
        let o = dae([cmd, model.to_str().unwrap(), data.to_str().unwrap(), "-o", out.to_str().unwrap()]);
        assert_fails(&o, 2, &["wide.csv", "8 columns", "expects 6"]);
    }
    assert!(!out.exists());
}

#[test]
fn cross_entropy_on_data_outside_unit_interval() {
    let s = Scratch::new("ce");
    // The error names the file's line, past the header and a blank line (data row 2).
    let p = s.write("big.csv", "x,y\n0.1,0.2\n\n3.5,0.4\n");
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m").to_str().unwrap()]);
    assert_fails(&o, 2, &["big.csv", "line 4, column 1", "outside [0, 1]", "--scale minmax"]);
    // The suggested fixes work.
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m").to_str().unwrap(), "--scale", "minmax", "--hidden", "2", "--epochs", "1", "-q"]);
    assert_ok(&o);
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m2").to_str().unwrap(), "--loss", "squared-error", "--hidden", "2", "--epochs", "1", "-q"]);
    assert_ok(&o);
    // Minmax-scaled data beyond the training rows' range (validation, new data) is taken:
    // cross-entropy clips its target to [0, 1].
    let wide = s.write("wide.csv", "5.0,0.0\n-1.0,0.9\n0.2,0.3\n");
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m4").to_str().unwrap(), "--scale", "minmax", "--val", wide.to_str().unwrap(), "--hidden", "2", "--epochs", "1", "-q"]);
    assert_ok(&o);
    for cmd in ["score", "encode", "reconstruct"] {
        let o = dae([cmd, s.path("m").to_str().unwrap(), wide.to_str().unwrap(), "-o", s.path(&format!("{cmd}.npy")).to_str().unwrap(), "-q"]);
        assert_ok(&o);
    }
    // Standardized values are not in [0, 1]: refused, saying so.
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m5").to_str().unwrap(), "--scale", "standardize"]);
    assert_fails(&o, 2, &["big.csv", "after --scale standardize", "outside [0, 1]", "--loss squared-error"]);
    // Cross-entropy needs a sigmoid decoder.
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m3").to_str().unwrap(), "--decoder", "identity"]);
    assert_fails(&o, 2, &["--loss", "sigmoid decoder"]);
}

#[test]
fn model_file_truncated_or_not_ours() {
    let s = Scratch::new("model");
    let model = small_model(&s, 4);
    let data = s.write("d.csv", unit_csv(3, 4));
    let bytes = std::fs::read(&model).unwrap();
    let cut = s.write("cut.safetensors", &bytes[..bytes.len() / 2]);
    let tiny = s.write("tiny.safetensors", &bytes[..5]);
    let text = s.write("notes.safetensors", "hello, this is not a model");
    let out = s.path("out.npy");
    for bad in [&cut, &tiny, &text] {
        let o = dae(["encode", bad.to_str().unwrap(), data.to_str().unwrap(), "-o", out.to_str().unwrap()]);
        assert_fails(&o, 2, &[bad.file_name().unwrap().to_str().unwrap(), "not a dae model file"]);
        let o = dae(["inspect", bad.to_str().unwrap()]);
        assert_fails(&o, 2, &["not a dae model file"]);
    }
    let o = dae(["encode", "/nonexistent/model.safetensors", data.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_fails(&o, 2, &["/nonexistent/model.safetensors", "no such file"]);
    assert!(!out.exists());
}

#[test]
fn invalid_option_values() {
    let s = Scratch::new("opts");
    let data = s.write("d.csv", unit_csv(10, 4));
    let d = data.to_str().unwrap();
    let m = s.path("m");
    let m = m.to_str().unwrap();
    for (args, needles) in [
        (vec!["--noise", "masking:1.5"], vec!["--noise", "masking level 1.5 is outside [0, 1)"]),
        (vec!["--noise", "blur:0.1"], vec!["--noise", "not a noise process"]),
        (vec!["--hidden", "0"], vec!["--hidden", "at least one hidden unit"]),
        (vec!["--batch", "0"], vec!["--batch", "at least 1"]),
        (vec!["--epochs", "0"], vec!["--epochs"]),
        (vec!["--lr", "-1"], vec!["--lr"]),
        (vec!["--encoder", "softmax"], vec!["--encoder", "not an activation"]),
        (vec!["--emphasis", "1"], vec!["--emphasis", "ALPHA,BETA"]),
        (vec!["--val-fraction", "1.5"], vec!["--val-fraction", "outside (0, 1)"]),
        (vec!["--patience", "3"], vec!["--patience", "validation data"]),
        (vec!["--momentum", "1.2"], vec!["--momentum"]),
        (vec!["--nesterov"], vec!["--nesterov", "--momentum"]),
        (vec!["--scale", "log"], vec!["--scale", "not a scaling"]),
        (vec!["--threads", "0"], vec!["--threads"]),
    ] {
        let mut all = vec!["train", d, "-o", m];
        all.extend(args.iter().copied());
        let o = dae(&all);
        assert_fails(&o, 2, &needles);
    }
    assert_eq!(s.files(), vec!["d.csv".to_string()], "no model was written");
}

#[test]
fn unknown_output_format_and_missing_folder() {
    let s = Scratch::new("outfmt");
    let model = small_model(&s, 4);
    let data = s.write("d.csv", unit_csv(3, 4));
    let o = dae(["encode", model.to_str().unwrap(), data.to_str().unwrap(), "-o", s.path("codes.txt").to_str().unwrap()]);
    assert_fails(&o, 2, &["codes.txt", ".npy or .csv"]);
    let o = dae(["encode", model.to_str().unwrap(), data.to_str().unwrap(), "-o", "/nonexistent/dir/codes.npy"]);
    assert_fails(&o, 2, &["/nonexistent/dir", "does not exist"]);
    let o = dae(["train", data.to_str().unwrap(), "-o", "/nonexistent/dir/m.safetensors"]);
    assert_fails(&o, 2, &["/nonexistent/dir", "does not exist"]);
}

#[test]
fn a_failed_command_keeps_the_previous_output() {
    let s = Scratch::new("keep");
    let model = small_model(&s, 4);
    let out = s.write("codes.npy", b"previous result");
    let bad = s.write("bad.csv", "0.1,0.2,0.3,0.4\n0.5,x,0.1,0.2\n");
    let o = dae(["encode", model.to_str().unwrap(), bad.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_fails(&o, 2, &["bad.csv"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"previous result");
    // And a failed training keeps an existing model.
    let before = std::fs::read(&model).unwrap();
    let o = dae(["train", bad.to_str().unwrap(), "-o", model.to_str().unwrap()]);
    assert_fails(&o, 2, &["bad.csv"]);
    assert_eq!(std::fs::read(&model).unwrap(), before);
    assert!(!s.files().iter().any(|f| f.ends_with(".tmp")), "{:?}", s.files());
}

#[test]
fn device_and_precision_requests() {
    let s = Scratch::new("device");
    let p = s.write("d.csv", &unit_csv(6, 4));
    let m = s.path("m");
    let train = |extra: &[&str]| {
        let mut args = vec!["train", p.to_str().unwrap(), "-o", m.to_str().unwrap(), "--hidden", "2", "--epochs", "1"];
        args.extend_from_slice(extra);
        dae(args)
    };
    assert_fails(&train(&["--device", "gpu0"]), 2, &["--device", "'gpu0' is not a device", "cuda:N"]);
    assert_fails(&train(&["--device", "cpu", "--precision", "tf32"]), 2, &["--precision", "tf32 is for GPU products"]);
    assert_fails(&train(&["--precision", "bf16"]), 2, &["--precision", "bf16 is not implemented"]);
    // A GPU asked for: used where one is usable, else the CPU, saying why (TF32: in fp32).
    for (extra, fallback) in [(&["--device", "cuda"][..], "running on the CPU"), (&["--device", "gpu", "--precision", "tf32"][..], "running on the CPU in fp32")] {
        let o = train(extra);
        assert_ok(&o);
        let err = stderr(&o);
        if err.contains("no usable GPU") {
            assert!(err.contains(fallback), "{extra:?}: {err}");
        }
    }
}

/// Standard output that cannot be written (a full disk, a closed pipe) is no panic: a full disk
/// is an error (exit code 1) once the command is done; a reader that closed the pipe had what it
/// wanted (exit code 0).
#[test]
fn unwritable_standard_output() {
    let s = Scratch::new("stdout");
    let model = small_model(&s, 4);
    let bin = env!("CARGO_BIN_EXE_dae");
    if std::path::Path::new("/dev/full").exists() {
        let o = std::process::Command::new(bin)
            .args(["inspect", model.to_str().unwrap()])
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        assert_fails(&o, 1, &["standard output: writing failed: the disk is full"]);
        // Help too.
        for args in [&["--help"][..], &["train", "--help"], &["--version"]] {
            let o = std::process::Command::new(bin).args(args).stdout(std::fs::File::create("/dev/full").unwrap()).output().unwrap();
            assert_fails(&o, 1, &["standard output: writing failed: the disk is full"]);
        }
    }
    // Help written: exit code 0.
    let o = std::process::Command::new(bin).arg("--help").output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Usage"), "{o:?}");
    // A pipe whose reader is gone before anything is written.
    let mut child = std::process::Command::new(bin)
        .args(["inspect", model.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success() && !stderr(&o).contains("panicked"), "exit {:?}: {}", o.status.code(), stderr(&o));
    // Standard error closed: training still writes its model.
    let m2 = s.path("m2.safetensors");
    let data = s.write("d2.csv", unit_csv(40, 4));
    let mut child = std::process::Command::new(bin)
        .args(["train", data.to_str().unwrap(), "-o", m2.to_str().unwrap(), "--hidden", "2", "--epochs", "3"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert!(status.success() && m2.exists(), "exit {:?}", status.code());
}

/// Sizes no machine holds are refused before anything is allocated (exit code 2, naming the
/// option), and a huge --epochs (stopped early by --patience) allocates nothing up front.
#[test]
fn absurd_model_sizes_are_refused_up_front() {
    let s = Scratch::new("absurd");
    let data = s.write("d.csv", unit_csv(40, 6));
    let labels = s.write("l.csv", (0..40).map(|i| format!("{}\n", i % 3)).collect::<String>());
    let (d, l) = (data.to_str().unwrap(), labels.to_str().unwrap());
    let m = s.path("m.safetensors");
    let m = m.to_str().unwrap();
    let o = dae(["train", d, "-o", m, "--hidden", "4000000000", "--epochs", "1"]);
    assert_fails(&o, 2, &["--hidden", "memory"]);
    let o = dae(["pretrain", d, "-o", m, "--layers", "5,100000000000", "--epochs", "1"]);
    assert_fails(&o, 2, &["--layers", "memory"]);
    let o = dae(["finetune", "--from-scratch", d, "--labels", l, "-o", m, "--layers", "100000000000", "--epochs", "1"]);
    assert_fails(&o, 2, &["--layers", "memory"]);
    let o = dae(["finetune", "--from-scratch", d, "--labels", l, "-o", m, "--layers", "4", "--classes", "100000000000", "--per-class", "5"]);
    assert_fails(&o, 2, &["--classes", "memory"]);
    let o = dae(["finetune", "--from-scratch", d, "--labels", l, "-o", m, "--layers", "4", "--classes", "0"]);
    assert_fails(&o, 2, &["--classes", "at least 2"]);
    assert!(!s.path("m.safetensors").exists());
    let o = dae(["train", d, "-o", m, "--hidden", "3", "--epochs", "1000000000", "--val-fraction", "0.2", "--patience", "1", "--lr", "1e-30", "-q"]);
    assert_ok(&o);
    // A negative count is a bad value of its option, not an unknown flag.
    let o = dae(["train", d, "-o", m, "--epochs", "-1"]);
    assert_fails(&o, 2, &["invalid value '-1' for '--epochs"]);
    // A batch larger than the data is the whole data (as it always was), not a memory error.
    assert_ok(&dae(["train", d, "-o", m, "--hidden", "3", "--epochs", "1", "--batch", "1000000000", "-q"]));
}

/// A stack brings its own layers, activation and scaling: fine-tuning one refuses those options
/// instead of ignoring them.
#[test]
fn finetuning_a_stack_refuses_the_from_scratch_options() {
    let s = Scratch::new("stackopts");
    let data = s.write("d.csv", unit_csv(40, 6));
    let labels = s.write("l.csv", (0..40).map(|i| format!("{}\n", i % 3)).collect::<String>());
    let (d, l) = (data.to_str().unwrap(), labels.to_str().unwrap());
    let stack = s.path("s.safetensors");
    assert_ok(&dae(["pretrain", d, "-o", stack.to_str().unwrap(), "--layers", "4", "--epochs", "1", "-q"]));
    let out = s.path("f.safetensors");
    for (opt, value) in [("--activation", "tanh"), ("--scale", "minmax"), ("--layers", "3")] {
        let o = dae(["finetune", stack.to_str().unwrap(), d, "--labels", l, "-o", out.to_str().unwrap(), "--epochs", "1", opt, value]);
        assert_fails(&o, 2, &[opt, "a stack brings its own"]);
    }
    assert!(!out.exists());
}

/// A label file's errors name its line, past a header and blank lines.
#[test]
fn label_errors_name_the_line() {
    let s = Scratch::new("labelline");
    let d = s.write("d.csv", "0.1,0.2\n0.3,0.4\n0.5,0.6\n");
    let l = s.write("l.csv", "label\n1\n\n0\n0.5\n");
    let o = dae(["finetune", "--from-scratch", d.to_str().unwrap(), "--labels", l.to_str().unwrap(), "--layers", "2", "-o", s.path("f.safetensors").to_str().unwrap(), "--epochs", "1"]);
    assert_fails(&o, 2, &["l.csv", "line 5", "not a whole number"]);
}

/// An output that is one of the command's inputs is refused: writing it would destroy it.
#[test]
fn an_output_that_is_an_input_is_refused() {
    let s = Scratch::new("selfout");
    let data = s.write("d.csv", unit_csv(20, 4));
    let before = std::fs::read(&data).unwrap();
    let d = data.to_str().unwrap();
    let o = dae(["train", d, "-o", d, "--hidden", "2", "--epochs", "1", "-q"]);
    assert_fails(&o, 2, &["--output", "is also an input"]);
    let m = s.path("m.safetensors");
    assert_ok(&dae(["train", d, "-o", m.to_str().unwrap(), "--hidden", "2", "--epochs", "1", "-q"]));
    // The same file by another name.
    let other = format!("{}/./d.csv", s.path("").display());
    let o = dae(["encode", m.to_str().unwrap(), d, "-o", &other, "-q"]);
    assert_fails(&o, 2, &["--output", "is also an input"]);
    // The extra outputs of training, and a report, too.
    let m2 = s.path("m2.safetensors");
    for (opt, code) in [("--report", "--report"), ("--log-json", "--log-json"), ("--checkpoint", "--checkpoint")] {
        let o = dae(["train", d, "-o", m2.to_str().unwrap(), "--hidden", "2", "--epochs", "1", "-q", opt, d]);
        assert_fails(&o, 2, &[code, "is also an input"]);
    }
    let model_before = std::fs::read(&m).unwrap();
    let o = dae(["report", m.to_str().unwrap(), "-o", m.to_str().unwrap()]);
    assert_fails(&o, 2, &["--output", "is also an input"]);
    assert_eq!(std::fs::read(&m).unwrap(), model_before);
    assert_eq!(std::fs::read(&data).unwrap(), before);
}

/// A label file (1-D IDX) given as data is named as such.
#[test]
fn idx_labels_as_data_are_refused() {
    let s = Scratch::new("idxlabels");
    let mut bytes = vec![0u8, 0, 8, 1, 0, 0, 0, 5];
    bytes.extend([1u8, 2, 3, 4, 5]);
    let p = s.write("t-labels-idx1-ubyte", &bytes);
    let o = dae(["train", p.to_str().unwrap(), "-o", s.path("m.safetensors").to_str().unwrap()]);
    assert_fails(&o, 2, &["t-labels-idx1-ubyte", "holds labels, not examples"]);
}
