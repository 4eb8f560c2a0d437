//! Every hyperparameter in one place, with its default, its parsing and its validation.
//!
//! The same types are filled by the CLI, by library users, and read back from a model file's
//! metadata, so a model always carries the exact configuration it was trained with.

use crate::augment::Augment;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An elementwise nonlinearity `s(·)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    Sigmoid,
    Tanh,
    Relu,
    Identity,
}

impl Activation {
    pub const ALL: [Activation; 4] = [
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Relu,
        Activation::Identity,
    ];

    /// s(a).
    #[inline(always)]
    pub fn apply(self, a: f32) -> f32 {
        match self {
            Activation::Sigmoid => sigmoid(a),
            Activation::Tanh => a.tanh(),
            Activation::Relu => a.max(0.0),
            Activation::Identity => a,
        }
    }

    /// s'(a) expressed through the output y = s(a), as backpropagation has y at hand.
    #[inline(always)]
    pub fn grad_from_output(self, y: f32) -> f32 {
        match self {
            Activation::Sigmoid => y * (1.0 - y),
            Activation::Tanh => 1.0 - y * y,
            Activation::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Identity => 1.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
            Activation::Identity => "identity",
        }
    }
}

/// The logistic function, computed without overflow for any finite input.
#[inline(always)]
pub fn sigmoid(a: f32) -> f32 {
    if a >= 0.0 {
        1.0 / (1.0 + (-a).exp())
    } else {
        let e = a.exp();
        e / (1.0 + e)
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Activation {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Activation::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("'{s}' is not an activation (sigmoid, tanh, relu, identity)"))
    }
}

/// The reconstruction loss, a per-row sum over the inputs averaged over the rows of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Σ_j −[x_j log z_j + (1−x_j) log(1−z_j)], from the logits; needs a sigmoid decoder and
    /// targets in [0, 1].
    CrossEntropy,
    /// Σ_j (z_j − x_j)².
    SquaredError,
}

impl Loss {
    pub fn name(self) -> &'static str {
        match self {
            Loss::CrossEntropy => "cross-entropy",
            Loss::SquaredError => "squared-error",
        }
    }
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Loss {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cross-entropy" | "ce" => Ok(Loss::CrossEntropy),
            "squared-error" | "mse" => Ok(Loss::SquaredError),
            _ => Err(format!(
                "'{s}' is not a loss (cross-entropy, squared-error)"
            )),
        }
    }
}

/// The corruption process q_D(x̃ | x) applied to each input before encoding.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Corruption {
    /// No corruption: a plain autoencoder.
    None,
    /// Each input set to 0 with probability `level`, independently.
    Masking { level: f32 },
    /// x + N(0, sigma²) on every input.
    Gaussian { sigma: f32 },
    /// Each input hit with probability `level`; a hit input becomes 0 or 1 by a fair coin.
    SaltAndPepper { level: f32 },
}

impl Default for Corruption {
    fn default() -> Self {
        Corruption::Masking { level: 0.3 }
    }
}

impl Corruption {
    /// Checks the level: masking in [0, 1), salt-and-pepper in [0, 1], σ finite and ≥ 0.
    pub fn validate(&self, field: &str) -> Result<()> {
        let bad = |m: String| Err(Error::usage(field, m));
        match *self {
            Corruption::None => Ok(()),
            Corruption::Masking { level } if !(0.0..1.0).contains(&level) => bad(format!(
                "masking level {level} is outside [0, 1): it is the probability of zeroing an input"
            )),
            Corruption::SaltAndPepper { level } if !(0.0..=1.0).contains(&level) => bad(format!(
                "salt-and-pepper level {level} is outside [0, 1]: it is the probability of hitting an input"
            )),
            Corruption::Gaussian { sigma } if !(sigma.is_finite() && sigma >= 0.0) => bad(format!(
                "gaussian sigma {sigma} must be finite and at least 0"
            )),
            _ => Ok(()),
        }
    }

    /// Whether the process produces a mask of corrupted inputs (used by emphasis).
    pub fn is_none(&self) -> bool {
        matches!(self, Corruption::None)
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::None => f.write_str("none"),
            Corruption::Masking { level } => write!(f, "masking:{level}"),
            Corruption::Gaussian { sigma } => write!(f, "gaussian:{sigma}"),
            Corruption::SaltAndPepper { level } => write!(f, "salt-and-pepper:{level}"),
        }
    }
}

impl FromStr for Corruption {
    type Err = String;
    /// `none`, `masking:0.3`, `gaussian:0.2`, `salt-and-pepper:0.25`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (kind, level) = match s.split_once(':') {
            Some((k, v)) => (k, Some(v)),
            None => (s, None),
        };
        let level = |default: Option<f32>| -> std::result::Result<f32, String> {
            match level {
                Some(v) => v
                    .trim()
                    .parse::<f32>()
                    .map_err(|_| format!("'{v}' in '{s}' is not a number")),
                None => default.ok_or_else(|| format!("'{s}' needs a level, as in {kind}:0.3")),
            }
        };
        let c = match kind {
            "none" if level(Some(0.0))? == 0.0 => Corruption::None,
            "masking" => Corruption::Masking { level: level(None)? },
            "gaussian" => Corruption::Gaussian { sigma: level(None)? },
            "salt-and-pepper" | "salt_and_pepper" => Corruption::SaltAndPepper { level: level(None)? },
            _ => {
                return Err(format!(
                    "'{s}' is not a noise process (none, masking:ν, gaussian:σ, salt-and-pepper:ν)"
                ))
            }
        };
        c.validate("noise").map_err(|e| match e {
            Error::Usage { message, .. } => message,
            other => other.to_string(),
        })?;
        Ok(c)
    }
}

impl From<Corruption> for String {
    fn from(c: Corruption) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for Corruption {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

/// Emphasized denoising (Vincent et al. 2010, §4.3): loss weight `corrupted` (α) on the inputs the
/// noise touched and `clean` (β) on the others.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Emphasis {
    pub corrupted: f32,
    pub clean: f32,
}

impl FromStr for Emphasis {
    type Err = String;
    /// `ALPHA,BETA`, as in `1.0,0.5`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let [a, b] = parts[..] else {
            return Err(format!("'{s}' is not ALPHA,BETA (for example 1.0,0.5)"));
        };
        let num = |v: &str| {
            v.parse::<f32>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("'{v}' in '{s}' is not a finite number ≥ 0"))
        };
        let e = Emphasis {
            corrupted: num(a)?,
            clean: num(b)?,
        };
        if e.corrupted == 0.0 && e.clean == 0.0 {
            return Err("both emphasis weights are 0: nothing would be learned".into());
        }
        Ok(e)
    }
}

/// The optimiser, with PyTorch's semantics (`torch.optim.SGD`, `Adam`, `AdamW`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Optimizer {
    Sgd {
        momentum: f32,
        nesterov: bool,
        weight_decay: f32,
    },
    Adam {
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    },
    #[serde(rename = "adamw")]
    AdamW {
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    },
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer::sgd()
    }
}

impl Optimizer {
    /// Plain SGD.
    pub fn sgd() -> Self {
        Optimizer::Sgd {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
    /// Adam with PyTorch's defaults.
    pub fn adam() -> Self {
        Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
    /// AdamW with PyTorch's defaults (weight decay 0.01).
    pub fn adamw() -> Self {
        Optimizer::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd { .. } => "sgd",
            Optimizer::Adam { .. } => "adam",
            Optimizer::AdamW { .. } => "adamw",
        }
    }

    /// Checks every hyperparameter's range.
    pub fn validate(&self) -> Result<()> {
        let check = |ok: bool, field: &str, msg: String| {
            if ok {
                Ok(())
            } else {
                Err(Error::usage(field, msg))
            }
        };
        match *self {
            Optimizer::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => {
                check(
                    (0.0..1.0).contains(&momentum),
                    "--momentum",
                    format!("{momentum} is outside [0, 1)"),
                )?;
                check(
                    !nesterov || momentum > 0.0,
                    "--nesterov",
                    "Nesterov momentum needs --momentum above 0".into(),
                )?;
                check(
                    weight_decay.is_finite() && weight_decay >= 0.0,
                    "--weight-decay",
                    format!("{weight_decay} must be finite and at least 0"),
                )
            }
            Optimizer::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            }
            | Optimizer::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                check(
                    (0.0..1.0).contains(&beta1),
                    "--beta1",
                    format!("{beta1} is outside [0, 1)"),
                )?;
                check(
                    (0.0..1.0).contains(&beta2),
                    "--beta2",
                    format!("{beta2} is outside [0, 1)"),
                )?;
                check(
                    eps.is_finite() && eps > 0.0,
                    "--eps",
                    format!("{eps} must be above 0"),
                )?;
                check(
                    weight_decay.is_finite() && weight_decay >= 0.0,
                    "--weight-decay",
                    format!("{weight_decay} must be finite and at least 0"),
                )
            }
        }
    }
}

/// How inputs are scaled before the model sees them; fitted on the training data and stored in
/// the model so that every later command applies the same transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleKind {
    /// Values as read (u8 pixels are always divided by 255 first).
    #[default]
    None,
    /// Each column mapped linearly onto [0, 1] by its training minimum and maximum.
    Minmax,
    /// Each column shifted to mean 0 and scaled to standard deviation 1.
    Standardize,
}

impl FromStr for ScaleKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(ScaleKind::None),
            "minmax" => Ok(ScaleKind::Minmax),
            "standardize" => Ok(ScaleKind::Standardize),
            _ => Err(format!("'{s}' is not a scaling (none, minmax, standardize)")),
        }
    }
}

impl fmt::Display for ScaleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScaleKind::None => "none",
            ScaleKind::Minmax => "minmax",
            ScaleKind::Standardize => "standardize",
        })
    }
}

/// The architecture and objective of one denoising autoencoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DaeConfig {
    /// d: the width of the input and of the reconstruction.
    pub inputs: usize,
    /// k: the number of hidden units.
    pub hidden: usize,
    pub encoder: Activation,
    pub decoder: Activation,
    /// W' = Wᵀ when true (the default); a separate decoder matrix V otherwise.
    pub tied: bool,
    pub loss: Loss,
    pub noise: Corruption,
    pub emphasis: Option<Emphasis>,
}

impl DaeConfig {
    /// The classic configuration: sigmoid units, tied weights, cross-entropy, masking 0.3.
    pub fn new(inputs: usize, hidden: usize) -> Self {
        DaeConfig {
            inputs,
            hidden,
            encoder: Activation::Sigmoid,
            decoder: Activation::Sigmoid,
            tied: true,
            loss: Loss::CrossEntropy,
            noise: Corruption::default(),
            emphasis: None,
        }
    }

    /// Checks sizes, the noise level and that the loss suits the decoder.
    pub fn validate(&self) -> Result<()> {
        if self.inputs == 0 {
            return Err(Error::usage("inputs", "the data has no columns"));
        }
        if self.hidden == 0 {
            return Err(Error::usage("--hidden", "at least one hidden unit is needed"));
        }
        self.noise.validate("--noise")?;
        if self.loss == Loss::CrossEntropy && self.decoder != Activation::Sigmoid {
            return Err(Error::usage(
                "--loss",
                format!(
                    "cross-entropy needs a sigmoid decoder (outputs in (0, 1)), not {}; \
                     use --decoder sigmoid or --loss squared-error",
                    self.decoder
                ),
            ));
        }
        Ok(())
    }

    /// Half-width of the uniform initialisation: sqrt(6/(d+k)), times 4 for sigmoid units
    /// (Glorot & Bengio 2010).
    pub fn init_range(&self) -> f32 {
        init_range(self.inputs, self.hidden, self.encoder)
    }
}

/// sqrt(6/(fan_in+fan_out)), times 4 when the units are sigmoids.
pub fn init_range(fan_in: usize, fan_out: usize, act: Activation) -> f32 {
    let r = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    if act == Activation::Sigmoid {
        4.0 * r
    } else {
        r
    }
}

/// How to train: optimisation, schedule, validation and reproducibility.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub optimizer: Optimizer,
    pub lr: f32,
    /// The learning rate is multiplied by this after every epoch (1 = constant).
    pub lr_decay: f32,
    pub seed: u64,
    /// Stop when the validation loss has not improved for this many epochs, keeping the best
    /// weights. Needs validation data.
    pub patience: Option<usize>,
    /// Hold out this fraction of the rows (chosen at random from the seed) for validation.
    pub val_fraction: Option<f32>,
    /// Worker threads; `None` uses every core.
    pub threads: Option<usize>,
    /// Clip the gradients' global L2 norm to this before each step.
    #[serde(default)]
    pub max_grad_norm: Option<f32>,
    /// Fine-tuning on images only: random translations and mirror images of each training
    /// example, drawn afresh every epoch (see [`crate::augment`]).
    #[serde(default, skip_serializing_if = "no_augment")]
    pub augment: Augment,
}

fn no_augment(a: &Augment) -> bool {
    !a.is_active()
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 15,
            batch: 20,
            optimizer: Optimizer::sgd(),
            lr: 0.1,
            lr_decay: 1.0,
            seed: 1,
            patience: None,
            val_fraction: None,
            threads: None,
            max_grad_norm: None,
            augment: Augment::default(),
        }
    }
}

impl TrainConfig {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::usage("--epochs", "at least one epoch is needed"));
        }
        if self.batch == 0 {
            return Err(Error::usage("--batch", "the batch size must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::usage("--lr", format!("{} must be a number above 0", self.lr)));
        }
        if !(self.lr_decay > 0.0 && self.lr_decay <= 1.0) {
            return Err(Error::usage(
                "--lr-decay",
                format!("{} is outside (0, 1]: it multiplies the rate after each epoch", self.lr_decay),
            ));
        }
        if let Some(f) = self.val_fraction {
            if !(f > 0.0 && f < 1.0) {
                return Err(Error::usage(
                    "--val-fraction",
                    format!("{f} is outside (0, 1)"),
                ));
            }
        }
        if self.patience == Some(0) {
            return Err(Error::usage("--patience", "must be at least 1 epoch"));
        }
        if self.threads == Some(0) {
            return Err(Error::usage("--threads", "must be at least 1"));
        }
        if let Some(m) = self.max_grad_norm {
            if !(m.is_finite() && m > 0.0) {
                return Err(Error::usage("--max-grad-norm", format!("{m} must be a number above 0")));
            }
        }
        self.optimizer.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_specs_parse_and_round_trip() {
        for s in ["none", "masking:0.3", "gaussian:0.2", "salt-and-pepper:0.25"] {
            let c: Corruption = s.parse().unwrap();
            assert_eq!(c.to_string(), s);
        }
        assert!("masking:1.5".parse::<Corruption>().unwrap_err().contains("outside [0, 1)"));
        assert!("masking:-0.1".parse::<Corruption>().is_err());
        assert!("masking".parse::<Corruption>().unwrap_err().contains("needs a level"));
        assert!("gaussian:x".parse::<Corruption>().unwrap_err().contains("not a number"));
        assert!("blur:0.3".parse::<Corruption>().is_err());
    }

    #[test]
    fn cross_entropy_needs_sigmoid_decoder() {
        let mut c = DaeConfig::new(4, 3);
        c.decoder = Activation::Identity;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("sigmoid decoder"), "{e}");
        c.loss = Loss::SquaredError;
        c.validate().unwrap();
    }

    #[test]
    fn invalid_values_are_refused() {
        assert!(DaeConfig::new(4, 0).validate().is_err());
        let t = TrainConfig {
            batch: 0,
            ..Default::default()
        };
        assert!(t.validate().unwrap_err().to_string().contains("--batch"));
        let t = TrainConfig {
            optimizer: Optimizer::Sgd {
                momentum: 0.0,
                nesterov: true,
                weight_decay: 0.0,
            },
            ..Default::default()
        };
        assert!(t.validate().is_err());
        assert!("1.0".parse::<Emphasis>().is_err());
        assert_eq!(
            "1.0,0.5".parse::<Emphasis>().unwrap(),
            Emphasis {
                corrupted: 1.0,
                clean: 0.5
            }
        );
    }

    #[test]
    fn init_range_is_glorot_times_four_for_sigmoid() {
        let r = init_range(784, 500, Activation::Sigmoid);
        assert!((r - 4.0 * (6.0f32 / 1284.0).sqrt()).abs() < 1e-7);
        assert!((init_range(784, 500, Activation::Tanh) - (6.0f32 / 1284.0).sqrt()).abs() < 1e-7);
    }
}
