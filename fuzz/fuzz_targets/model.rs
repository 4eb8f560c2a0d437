//! The model-file reader (every kind: autoencoder, stack, classifier, checkpoint metadata) on
//! arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dae::AnyModel::parse("fuzz.safetensors", data);
});
