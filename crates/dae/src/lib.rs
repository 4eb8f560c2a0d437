//! # dae: denoising autoencoders
//!
//! A denoising autoencoder (Vincent, Larochelle, Bengio & Manzagol, ICML 2008) corrupts each
//! input x with a noise process q_D (most often *masking*: each input set to 0 with probability
//! ν), encodes the corrupted x̃ as h = s(x̃·W + b), decodes z = s(h·W′ + c) and learns to
//! reconstruct the **clean** x. This crate trains such models, applies them (codes,
//! reconstructions, per-row anomaly scores) and stores them; the `dae` command-line tool is a
//! thin layer over it.
//!
//! ## Design in one page
//!
//! - **Configuration** ([`config`]): every hyperparameter lives in [`DaeConfig`] (architecture
//!   and objective) or [`TrainConfig`] (optimisation), with its default, parsing and validation.
//!   The CLI fills them, the library uses them, and model files store them.
//! - **One model, many devices** ([`backend`]): a model's forward and backward pass is written
//!   once ([`dae`]) against the [`Backend`] trait, a small set of operations on row-major f32
//!   matrices: matrix product, fused bias + activation, activation gradient, loss + gradient,
//!   corruption, column sums and the optimiser update. [`Cpu`] implements them with its own
//!   packed matrix products ([`backend::cpu::gemm`]: AVX2/FMA micro-kernels with tiles fitted to
//!   small batches, sums of products in one pass, no allocation), vectorised elementwise kernels
//!   ([`backend::cpu::vmath`]) checked against the plain loops of [`kernels`], and a team of
//!   spinning threads ([`backend::cpu::team`]). `Cuda` (feature `cuda`, on by default)
//!   implements the same operations on an NVIDIA GPU (cuBLAS products, NVRTC-compiled kernels,
//!   the driver loaded at run time), not a second copy of the model; it records each training
//!   step ([`Backend::step`]) and replays it as a CUDA graph, and the training loop reads the
//!   losses back in batches of steps ([`Backend::queued`]) so the GPU is never left waiting.
//! - **Fused steps.** Plain SGD needs no gradient buffers: the weight gradients are summed into
//!   the weights by the matrix product itself (`dae::GradSink`), in the same pass over W.
//! - **Noise you can reproduce** ([`corrupt`], [`rng`]): noise comes from the counter-based
//!   Philox generator, keyed by the seed and indexed by (epoch, position in the epoch, column),
//!   so an example's noise does not depend on batch size, thread count or device. The same seed
//!   and thread count give bit-identical weights: work is split over threads along fixed bounds
//!   and no reduction is split across threads.
//! - **One training loop** ([`train`]): every model (autoencoder, stack layer, fine-tuning
//!   network) implements one step and a validation pass; the loop brings shuffling, noise keys,
//!   validation, early stopping, checkpoints that resume bit-identically, stop requests and
//!   divergence checks. The training step allocates nothing: buffers
//!   ([`dae::DaeWorkspace`]) are sized once for the largest batch.
//! - **Data stays compact** ([`data`]): IDX, NPY and CSV readers; u8 pixels stay u8 in memory
//!   and are converted a batch at a time with the fitted [`Scaler`] (none, minmax, standardize),
//!   which is stored in the model so every later command scales the same way.
//! - **Files are never half-written** ([`atomic`], [`model_file`]): outputs and models go to a
//!   temporary file that is renamed into place. Models are safetensors with JSON metadata
//!   (configuration, scaling, history), readable from Python with `safetensors` + numpy.
//! - **Errors name the place** ([`error`]): every problem with user input is an [`Error`] naming
//!   the file and the line, column or field; nothing a user does makes the library panic.
//!
//! ## Verification
//!
//! The tests check forward pass, loss and every gradient against PyTorch autograd vectors
//! (`golden` tests, relative tolerance 1e-4), gradients against finite differences for every
//! activation × loss × tied/untied combination, each noise sampler statistically over ≥ 10⁵
//! draws, and end-to-end quality on Fashion-MNIST.
//!
//! ## Example
//!
//! ```
//! use dae::{Cpu, Dae, DaeConfig, Dataset, Scaler, Split, TrainConfig, train_dae};
//! // 64 rows of 8 binary-ish features.
//! let values: Vec<f32> = (0..64 * 8).map(|i| ((i * 7919) % 13 > 6) as u8 as f32).collect();
//! let data = Dataset::from_f32(64, 8, values);
//! let config = DaeConfig::new(8, 4); // sigmoid units, tied, cross-entropy, masking 0.3
//! let train = TrainConfig { epochs: 3, batch: 16, ..Default::default() };
//! let cpu = Cpu::new(Some(1)).unwrap();
//! let scaler = Scaler::identity(8);
//! let trained = train_dae(&cpu, Dae::init(&config, 1), &scaler, &Split::all(&data), None,
//!                         &train, dae::rng::stream::TRAIN_NOISE, &mut dae::Silent, None).unwrap();
//! assert_eq!(trained.history.len(), 3);
//! let codes = dae::infer::encode_all(&cpu, &trained.model, &data, &scaler).unwrap();
//! assert_eq!(codes.len(), 64 * 4);
//! ```

pub mod atomic;
pub mod augment;
pub mod backend;
pub mod config;
pub mod corrupt;
pub mod dae;
pub mod data;
pub mod error;
pub mod infer;
pub mod kernels;
pub mod memory;
pub mod metrics;
pub mod model_file;
pub mod network;
pub mod rng;
pub mod stack;
pub mod train;

pub use backend::{cpu::Cpu, Backend, Precision};
#[cfg(feature = "cuda")]
pub use backend::cuda::Cuda;
pub use config::{Activation, Corruption, DaeConfig, Emphasis, Loss, Optimizer, ScaleKind, TrainConfig};
pub use dae::Dae;
pub use data::{read_data, Dataset, ReadOptions, Scaler};
pub use error::{Error, Result};
pub use model_file::{AnyModel, DataInfo, SavedDae, SavedNetwork, SavedStack};
pub use train::{train_dae, EpochRecord, Observer, Silent, Split, Trained};
