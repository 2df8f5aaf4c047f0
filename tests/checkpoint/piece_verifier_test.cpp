// Unit tests of PieceVerifier (checkpoint/piece_verifier.h): pieces hashed on a second
// thread while the caller goes on, the first mismatch reported with the shard, tensor
// and rows, reuse after an error, and a destructor that does not wait for the queue.
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "checkpoint/format.h"
#include "checkpoint/piece_verifier.h"
#include "runtime/base/error.h"

namespace dtrain::checkpoint {
namespace {

// `n` pieces of one [n * rows, 64] float tensor, each with its true checksum.
struct Pieces {
  TensorRecord record;
  std::vector<at::Tensor> data;
};

Pieces MakePieces(int n, int64_t rows = 16) {
  Pieces out;
  out.record.name = "model/w";
  out.record.dtype = "float32";
  out.record.shape = std::vector<int64_t>{n * rows, 64};  // (GCC 12: -Wnonnull on = {...})
  at::Tensor full = at::arange(n * rows * 64, at::kFloat).reshape({n * rows, 64});
  for (int i = 0; i < n; ++i) {
    at::Tensor rows_i = full.narrow(0, i * rows, rows);
    PieceRecord p;
    p.shard = i % 2;
    p.row_start = i * rows;
    p.row_count = rows;
    p.bytes = rows * 64 * 4;
    p.xxh64 = tensor_xxh64(rows_i);
    p.shape = std::vector<int64_t>{rows, 64};
    out.record.pieces.push_back(p);
    out.data.push_back(rows_i);
  }
  return out;
}

void AddAll(PieceVerifier& v, const Pieces& ps) {
  for (size_t i = 0; i < ps.data.size(); ++i) {
    v.add("ckpt/shard-" + std::to_string(ps.record.pieces[i].shard) + ".h5", ps.record,
          ps.record.pieces[i], ps.data[i]);
  }
}

TEST(PieceVerifier, IntactPiecesPass) {
  Pieces ps = MakePieces(200);
  PieceVerifier v;
  AddAll(v, ps);
  EXPECT_NO_THROW(v.check());
  EXPECT_NO_THROW(v.check());  // nothing pending
}

TEST(PieceVerifier, ReportsTheFirstDamagedPiece) {
  Pieces ps = MakePieces(50);
  ps.data[7][3][5] = -1.0f;  // rows [112, 128) of shard 1
  ps.data[30][0][0] = -1.0f;
  PieceVerifier v;
  AddAll(v, ps);
  try {
    v.check();
    FAIL() << "no error";
  } catch (const CheckpointError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'ckpt/shard-1.h5': checksum mismatch for tensor 'model/w' rows [112, 128)"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find(hex64(ps.record.pieces[7].xxh64)), std::string::npos) << what;
  }
}

TEST(PieceVerifier, UsableAgainAfterAnError) {
  Pieces bad = MakePieces(4);
  bad.data[0][0][0] = 7.5f;
  PieceVerifier v;
  AddAll(v, bad);
  EXPECT_THROW(v.check(), CheckpointError);
  Pieces good = MakePieces(4);
  AddAll(v, good);
  EXPECT_NO_THROW(v.check());
}

TEST(PieceVerifier, DestroyedWithPiecesPending) {
  Pieces ps = MakePieces(64, 256);  // 4 MiB
  for (int round = 0; round < 20; ++round) {
    PieceVerifier v;
    AddAll(v, ps);
  }  // each destructor stops the worker without hashing the rest
  SUCCEED();
}

}  // namespace
}  // namespace dtrain::checkpoint
