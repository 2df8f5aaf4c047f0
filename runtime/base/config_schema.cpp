// The one place where every configuration key is declared: type, default, doc and, for
// numbers, the allowed range (checked on every merge, shown by --help-config).
// Keys follow detectron2's names where detectron2 has one.
#include "runtime/base/config.h"

#include <cmath>

namespace dtrain {
namespace {

using IL = std::vector<int64_t>;
using FL = std::vector<double>;
using SL = std::vector<std::string>;

// Ranges, as in ConfigRange: inclusive unless said otherwise; floats finite unless Inf.
ConfigRange AtLeast(double min) { return {min, HUGE_VAL, false, false, false}; }
ConfigRange Above(double min) { return {min, HUGE_VAL, true, false, false}; }
ConfigRange Between(double min, double max) { return {min, max, false, false, false}; }
ConfigRange AboveOrInf(double min) { return {min, HUGE_VAL, true, false, true}; }
// A size (dimension, count): 1 .. 2^31-1.
const ConfigRange kSize = Between(1, 2147483647.0);
// A count or period that may be 0.
const ConfigRange kCount = Between(0, 9.0e15);
// A fraction or probability.
const ConfigRange kUnit = Between(0, 1);
// A finite, non-negative factor (learning rates, decays, noise).
const ConfigRange kNonNegative = AtLeast(0);

ConfigKeySpec B(const char* k, bool v, const char* doc) { return {k, ConfigType::kBool, v, doc}; }
ConfigKeySpec I(const char* k, int64_t v, ConfigRange r, const char* doc) {
  return {k, ConfigType::kInt, v, doc, r};
}
ConfigKeySpec F(const char* k, double v, ConfigRange r, const char* doc) {
  return {k, ConfigType::kFloat, v, doc, r};
}
ConfigKeySpec S(const char* k, const char* v, const char* doc) {
  return {k, ConfigType::kString, std::string(v), doc};
}
ConfigKeySpec IV(const char* k, IL v, ConfigRange r, const char* doc) {
  return {k, ConfigType::kIntList, std::move(v), doc, r};
}
ConfigKeySpec FV(const char* k, FL v, ConfigRange r, const char* doc) {
  return {k, ConfigType::kFloatList, std::move(v), doc, r};
}
ConfigKeySpec SV(const char* k, SL v, const char* doc) {
  return {k, ConfigType::kStringList, std::move(v), doc};
}

std::vector<ConfigKeySpec> make_schema() {
  return {
      // ---- model ------------------------------------------------------------------
      S("MODEL.NAME", "mlp", "registered model to build: mlp, cnn, resnet, gpt"),
      S("MODEL.WEIGHTS", "",
        "dtrain checkpoint directory, PyTorch .pt/.pth, detectron2 .pth/.pkl, .safetensors or URL "
        "to initialize the model from"),
      S("MODEL.DEVICE", "cpu", "cpu or cuda (each rank takes GPU local_rank)"),
      I("MODEL.MLP.INPUT_DIM", 784, kSize, "mlp: input features"),
      IV("MODEL.MLP.HIDDEN_DIMS", IL{2048, 2048}, kSize, "mlp: width of each hidden layer"),
      I("MODEL.MLP.NUM_CLASSES", 10, kSize, "mlp: output classes"),
      I("MODEL.CNN.IN_CHANNELS", 1, kSize, "cnn: input image channels"),
      IV("MODEL.CNN.INPUT_SIZE", IL{28, 28}, kSize, "cnn: input [height, width]"),
      IV("MODEL.CNN.CHANNELS", IL{32, 64}, kSize,
         "cnn: filters of each Conv + BatchNorm + ReLU + 2x2 max pool block"),
      I("MODEL.CNN.KERNEL_SIZE", 3, kSize, "cnn: conv kernel size (odd; same padding)"),
      I("MODEL.CNN.HIDDEN_DIM", 256, Between(0, 2147483647.0),
        "cnn: width of the hidden Linear after the conv blocks (0: none)"),
      I("MODEL.CNN.NUM_CLASSES", 10, kSize, "cnn: output classes"),
      I("MODEL.RESNET.DEPTH", 18, kSize,
        "resnet: 18 or 34 (basic blocks), 50 or 101 (bottleneck blocks, torchvision's v1.5)"),
      S("MODEL.RESNET.STEM", "cifar",
        "resnet: cifar (3x3 stride-1 conv, no max pool) or imagenet (torchvision's 7x7 "
        "stride-2 conv + 3x3 stride-2 max pool; torchvision weights load strictly)"),
      I("MODEL.RESNET.WIDTH", 64, kSize,
        "resnet: channels of the first stage (doubles per stage; x4 out of bottlenecks)"),
      I("MODEL.RESNET.IN_CHANNELS", 3, kSize, "resnet: input image channels"),
      I("MODEL.RESNET.NUM_CLASSES", 10, kSize, "resnet: output classes"),
      I("MODEL.GPT.N_LAYER", 2, kSize, "gpt: transformer blocks"),
      I("MODEL.GPT.N_HEAD", 2, kSize, "gpt: attention heads (must divide N_EMBD)"),
      I("MODEL.GPT.N_EMBD", 64, kSize, "gpt: model width"),
      I("MODEL.GPT.VOCAB_SIZE", 256, kSize, "gpt: vocabulary size"),
      I("MODEL.GPT.CONTEXT_LENGTH", 64, kSize, "gpt: tokens per training sequence"),
      F("MODEL.GPT.DROPOUT", 0.0, kUnit, "gpt: dropout probability"),

      // ---- data -------------------------------------------------------------------
      SV("DATASETS.TRAIN", SL{"synthetic_classification"},
         "training set: synthetic_classification, synthetic_tokens, or an HDF5 file path"),
      SV("DATASETS.TEST", SL{},
         "evaluation sets (same names as DATASETS.TRAIN); empty disables evaluation"),
      S("DATASETS.FASHION_MNIST.ROOT", "/usr/share/datasets/fashion-mnist",
        "fashion_mnist_{train,test}: directory of the IDX .gz files (Debian's dataset-fashion-mnist)"),
      I("DATASETS.H5.IN_MEMORY_MAX_MB", 256, Between(0, 1 << 30),
        "HDF5 dataset files whose data takes at most this many MiB are read whole into memory; "
        "larger ones are read lazily per batch (0: always lazily)"),
      I("DATASETS.H5.CACHE_MB", 4, Between(0, 1 << 30),
        "block cache (MiB) of a lazily read HDF5 dataset file, per dataset and rank"),
      I("DATASETS.SYNTHETIC.NUM_TRAIN", 8192, kSize, "synthetic: training samples (or sequences)"),
      I("DATASETS.SYNTHETIC.NUM_TEST", 1024, kSize, "synthetic: evaluation samples (or sequences)"),
      IV("DATASETS.SYNTHETIC.INPUT_SHAPE", IL{784}, kSize,
         "synthetic_classification: shape of one input, e.g. [784] or [3, 32, 32]"),
      I("DATASETS.SYNTHETIC.NUM_CLASSES", 10, kSize, "synthetic_classification: label classes"),
      F("DATASETS.SYNTHETIC.NOISE", 0.5, kNonNegative,
        "synthetic_classification: noise around class centers"),
      B("DATALOADER.DROP_LAST", true, "sampler: drop the last incomplete global batch of an epoch"),
      B("DATALOADER.SHUFFLE", true, "sampler: shuffle each epoch (order from SEED + epoch)"),
      I("DATALOADER.NUM_WORKERS", 0, Between(0, 256),
        "threads per rank that make training batches ahead of the step (0: inline)"),
      I("DATALOADER.PREFETCH_FACTOR", 2, Between(1, 1024),
        "batches read ahead per worker (with NUM_WORKERS > 0)"),
      S("INPUT.RANDOM_FLIP", "none",
        "training images: none, horizontal or vertical flip with probability 1/2"),
      B("INPUT.CROP.ENABLED", false,
        "training images: pad by INPUT.CROP.PADDING, then crop back to size at random"),
      I("INPUT.CROP.PADDING", 4, kSize, "random crop: zero padding on each side (pixels)"),

      // ---- solver -----------------------------------------------------------------
      S("SOLVER.OPTIMIZER", "SGD", "SGD or AdamW"),
      F("SOLVER.BASE_LR", 0.01, kNonNegative, "base learning rate"),
      F("SOLVER.MOMENTUM", 0.9, kUnit, "SGD momentum"),
      B("SOLVER.NESTEROV", false, "SGD: use Nesterov momentum"),
      F("SOLVER.WEIGHT_DECAY", 0.0001, kNonNegative, "weight decay (decoupled for AdamW)"),
      FV("SOLVER.BETAS", FL{0.9, 0.999}, ConfigRange{0, 1, false, true, false},
         "AdamW: (beta1, beta2)"),
      F("SOLVER.EPS", 1e-8, kNonNegative, "AdamW: epsilon"),
      I("SOLVER.IMS_PER_BATCH", 16, kSize,
        "global batch per iteration, split evenly over ranks (must be divisible by world size)"),
      I("SOLVER.MAX_ITER", 100, Between(1, 9.0e15), "iterations to train"),
      S("SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR", "WarmupMultiStepLR or WarmupCosineLR"),
      IV("SOLVER.STEPS", IL{}, kCount,
         "WarmupMultiStepLR: iterations at which lr is multiplied by GAMMA"),
      F("SOLVER.GAMMA", 0.1, kNonNegative, "WarmupMultiStepLR: decay factor at each step"),
      I("SOLVER.WARMUP_ITERS", 10, kCount, "iterations of warmup"),
      F("SOLVER.WARMUP_FACTOR", 0.001, kNonNegative, "lr factor at iteration 0 of warmup"),
      S("SOLVER.WARMUP_METHOD", "linear", "linear or constant"),
      F("SOLVER.BASE_LR_END", 0.0, kNonNegative, "WarmupCosineLR: lr at MAX_ITER"),
      I("SOLVER.CHECKPOINT_PERIOD", 5000, kCount, "save a checkpoint every this many iterations"),
      B("SOLVER.CLIP_GRADIENTS.ENABLED", false, "clip gradients before the optimizer step"),
      S("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "value",
        "value (clamp each element), norm (per parameter, as detectron2) or full_model"),
      F("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 1.0, Above(0), "max element or max norm"),
      F("SOLVER.CLIP_GRADIENTS.NORM_TYPE", 2.0, AboveOrInf(0), "p of the p-norm for norm clipping"),

      // ---- distributed ------------------------------------------------------------
      S("DIST.BACKEND", "auto", "auto (nccl for cuda, else mpi), mpi, nccl or local"),
      F("DIST.BUCKET_CAP_MB", 25.0, ConfigRange{0, 1 << 20, true, false, false},
        "gradient all-reduce bucket size in MiB"),
      B("DIST.OVERLAP_GRAD_REDUCE", true,
        "start each bucket's all-reduce during backward, as soon as its gradients are ready"),
      B("DIST.GRADIENT_AS_BUCKET_VIEW", true,
        "gradients are views of the all-reduce buckets: no copies in and out (PyTorch DDP's "
        "gradient_as_bucket_view)"),
      B("DIST.BROADCAST_BUFFERS", true,
        "broadcast module buffers (e.g. BatchNorm stats) from rank 0 before each step"),

      // ---- evaluation, logging, system ----------------------------------------------
      I("TEST.EVAL_PERIOD", 0, kCount, "evaluate every this many iterations (0: only at the end)"),
      I("TEST.IMS_PER_BATCH", 64, kSize, "global evaluation batch"),
      S("TEST.BEST_CHECKPOINT.METRIC", "",
        "save OUTPUT_DIR/model_best after each evaluation that improves this metric, named "
        "'<dataset>/<metric>' as in metrics.json's 'eval/<dataset>/<metric>' (the 'eval/' "
        "prefix may be given); empty: off"),
      S("TEST.BEST_CHECKPOINT.MODE", "max",
        "max or min: whether a larger or a smaller TEST.BEST_CHECKPOINT.METRIC is better"),
      I("LOG.PERIOD", 20, kSize, "iterations between console lines and metrics.json records"),
      B("LOG.TENSORBOARD", true,
        "write every scalar to OUTPUT_DIR/events.out.tfevents.* for TensorBoard (rank 0)"),
      S("OUTPUT_DIR", "./output", "where checkpoints, config.yaml and metrics.json go"),
      I("SEED", 0, Between(-1, 9.0e15),
        "global seed for data order, synthetic data and initialization (-1: random)"),
      I("SYSTEM.NUM_THREADS", 0, Between(0, 4096),
        "intra-op threads per rank (0: OMP_NUM_THREADS, else the CPUs this process may use "
        "divided among the ranks on its node; a resumed run keeps its checkpoint's count)"),

      // ---- checkpointing ----------------------------------------------------------
      I("CHECKPOINT.MAX_TO_KEEP", 0, kCount, "periodic checkpoints to keep (0: all)"),
      B("CHECKPOINT.ASYNC", false, "write checkpoints in the background"),
      S("CHECKPOINT.ON_SAVE_ERROR", "stop",
        "stop or warn: whether a failed periodic save (disk full, I/O error) stops training "
        "or is logged and skipped (model_final always stops)"),
      B("CHECKPOINT.STRICT", false, "fail a load on missing/unexpected/mismatched keys"),
      B("CHECKPOINT.ALLOW_SYMLINKED_SHARDS", false,
        "read a shard that is a symbolic link to a regular file (with a warning) instead of refusing it"),
      B("CHECKPOINT.MATCHING_HEURISTICS", false,
        "match foreign weights' keys to the model's by longest '.'-aligned suffix "
        "(detectron2's heuristics; also on for WEIGHTS?matching_heuristics=True)"),
      F("CHECKPOINT.PREEMPT_DEADLINE_S", 120.0, Between(0, 1.0e9),
        "seconds after a preemption signal before exiting without a save"),
      SV("CHECKPOINT.PREEMPT_SIGNALS", SL{"SIGTERM", "SIGUSR1"},
         "signals that trigger a save-and-exit"),
      S("CHECKPOINT.LOAD_STRATEGY", "auto",
        "auto, all_read or read_once: whether every rank reads the checkpoint pieces it needs "
        "(all_read) or each piece is read once and broadcast (read_once); auto: all_read when "
        "every rank reads the same files on one node, else read_once"),
      I("CHECKPOINT.LOCAL.PERIOD", 0, kCount,
        "snapshot the training state into the node-local tier every this many iterations "
        "(0: off; docs/OPERATIONS.md)"),
      S("CHECKPOINT.LOCAL.DIR", "/dev/shm/dtrain-local-{user}",
        "root of the node-local tier ({user}: the user's name); a node keeps its snapshots "
        "under <DIR>/<node id>/ (node id: DTRAIN_NODE_ID, else the host name), which must be "
        "this user's alone (else the tier is off)"),
      I("CHECKPOINT.LOCAL.REPLICAS", 1, Between(0, 64),
        "copies of each rank's local snapshot kept on the next nodes (buddies)"),
      I("CHECKPOINT.LOCAL.KEEP", 2, Between(1, 1000), "local snapshots kept per node"),
      S("CHECKPOINT.LOCAL.WRITE", "auto",
        "auto, mapped or hdf5: how a rank writes its local snapshot; mapped copies the state "
        "into its shard file kept mapped and reused, hdf5 copies it to host memory and writes it "
        "through HDF5 in the background; auto: mapped when LOCAL.DIR is in memory (tmpfs) and "
        "the state is on the CPU"),
  };
}

}  // namespace

const std::vector<ConfigKeySpec>& config_schema() {
  static const std::vector<ConfigKeySpec> schema = make_schema();
  return schema;
}

}  // namespace dtrain
