// The safetensors reader believes nothing in a header until it has checked
// it against the file, and says which file and tensor are wrong.

#include "runtime/weights/Safetensors.h"
#include "CheckpointWriter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace moe {
namespace {

using testing::ScratchDirectory;

std::string openError(const std::string &path) {
  Result<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::open(path);
  return file.ok() ? "" : file.error().message();
}

/// A one-tensor header with the given entry, followed by `dataBytes` bytes.
std::string errorForEntry(const ScratchDirectory &scratch,
                          const std::string &entry, size_t dataBytes = 64) {
  std::string path = scratch.file("x.safetensors");
  testing::writeRawSafetensors(path, "{\"w\": " + entry + "}",
                               std::vector<uint8_t>(dataBytes));
  return openError(path);
}

TEST(Safetensors, ReadsTensorsAndSkipsMetadata) {
  ScratchDirectory scratch;
  std::string path = scratch.file("model.safetensors");
  testing::writeSafetensors(
      path, {testing::counting("a", {2, 3}, 0.0f),
             {"b", "BF16", {4}, testing::bf16Bytes({1.5f, -2.0f, 0.0f, 8.0f})},
             {"empty", "F16", {0, 4}, {}}});
  Result<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok()) << file.error().message();
  EXPECT_EQ((*file)->label(), "model.safetensors");
  EXPECT_EQ((*file)->tensors().size(), 3u);
  EXPECT_EQ((*file)->find("__metadata__"), nullptr);

  const TensorView *a = (*file)->find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->type, ElementType::F32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->numBytes(), 24);
  float last;
  std::memcpy(&last, static_cast<const uint8_t *>(a->data) + 20, 4);
  EXPECT_EQ(last, 5.0f);

  const TensorView *b = (*file)->find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->type, ElementType::BF16);
  EXPECT_EQ(static_cast<const uint8_t *>(b->data),
            static_cast<const uint8_t *>(a->data) + 24);
  EXPECT_EQ((*file)->find("empty")->numElements(), 0);
}

TEST(Safetensors, MissingFile) {
  ScratchDirectory scratch;
  std::string path = scratch.file("absent.safetensors");
  EXPECT_EQ(openError(path), path + ": cannot open: No such file or directory");
}

TEST(Safetensors, ShorterThanTheLengthPrefix) {
  ScratchDirectory scratch;
  std::string path = scratch.file("x.safetensors");
  testing::writeText(path, "abcde");
  EXPECT_EQ(openError(path), "x.safetensors: truncated: the file has 5 bytes, "
                             "fewer than the 8-byte header length");
}

TEST(Safetensors, HeaderLengthBeyondTheFile) {
  ScratchDirectory scratch;
  std::string path = scratch.file("x.safetensors");
  testing::writeText(path, std::string("\xe8\x03\0\0\0\0\0\0{}  ", 12));
  EXPECT_EQ(openError(path), "x.safetensors: header length 1000 exceeds the "
                             "file (4 bytes after the length)");
}

TEST(Safetensors, HeaderIsNotJson) {
  ScratchDirectory scratch;
  std::string path = scratch.file("x.safetensors");
  testing::writeRawSafetensors(path, "{\"w\": ", {});
  EXPECT_THAT(openError(path),
              ::testing::StartsWith("x.safetensors: header is not valid JSON: "
                                    "[json.exception.parse_error"));
}

TEST(Safetensors, HeaderIsNotAnObject) {
  ScratchDirectory scratch;
  std::string path = scratch.file("x.safetensors");
  testing::writeRawSafetensors(path, "[1, 2]", {});
  EXPECT_EQ(openError(path), "x.safetensors: header is not a JSON object");
}

TEST(Safetensors, EntryIsNotAnObject) {
  ScratchDirectory scratch;
  EXPECT_EQ(errorForEntry(scratch, "5"),
            "x.safetensors: tensor 'w': entry is not a JSON object");
}

TEST(Safetensors, MissingDtype) {
  ScratchDirectory scratch;
  EXPECT_EQ(errorForEntry(scratch, R"({"shape": [2], "data_offsets": [0, 8]})"),
            "x.safetensors: tensor 'w': no dtype string");
}

TEST(Safetensors, UnsupportedDtypes) {
  ScratchDirectory scratch;
  EXPECT_EQ(errorForEntry(
                scratch,
                R"({"dtype": "I64", "shape": [8], "data_offsets": [0, 64]})"),
            "x.safetensors: tensor 'w': dtype I64 is not supported (F32, F16, "
            "BF16, F8_E4M3 with scales and U8 MXFP4 blocks are)");
  // U8 is a byte an element (GPT-OSS's MXFP4 blocks and scales).
  EXPECT_EQ(
      errorForEntry(
          scratch, R"({"dtype": "U8", "shape": [8], "data_offsets": [0, 16]})"),
      "x.safetensors: tensor 'w': data_offsets [0, 16] hold 16 bytes, "
      "shape [8] of U8 needs 8");
}

TEST(Safetensors, BadShape) {
  ScratchDirectory scratch;
  const std::string expected = "x.safetensors: tensor 'w': shape is not a list "
                               "of non-negative integers";
  EXPECT_EQ(
      errorForEntry(scratch, R"({"dtype": "F32", "data_offsets": [0, 4]})"),
      expected);
  EXPECT_EQ(errorForEntry(
                scratch,
                R"({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]})"),
            expected);
  EXPECT_EQ(errorForEntry(
                scratch,
                R"({"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]})"),
            expected);
  EXPECT_EQ(
      errorForEntry(scratch,
                    R"({"dtype": "F32", "shape": 4, "data_offsets": [0, 4]})"),
      expected);
}

TEST(Safetensors, BadDataOffsets) {
  ScratchDirectory scratch;
  const std::string expected =
      "x.safetensors: tensor 'w': data_offsets is not a pair [begin, end] of "
      "non-negative integers with begin <= end";
  EXPECT_EQ(errorForEntry(scratch, R"({"dtype": "F32", "shape": [1]})"),
            expected);
  EXPECT_EQ(
      errorForEntry(
          scratch, R"({"dtype": "F32", "shape": [1], "data_offsets": [8, 4]})"),
      expected);
  EXPECT_EQ(errorForEntry(
                scratch,
                R"({"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]})"),
            expected);
  EXPECT_EQ(errorForEntry(
                scratch,
                R"({"dtype": "F32", "shape": [1], "data_offsets": [0, -4]})"),
            expected);
}

TEST(Safetensors, OffsetsDisagreeWithShape) {
  ScratchDirectory scratch;
  std::string path = scratch.file("model-00002-of-00003.safetensors");
  testing::writeRawSafetensors(
      path,
      R"({"model.layers.3.mlp.gate.weight": {"dtype": "BF16", "shape": [8, 8], "data_offsets": [0, 64]}})",
      std::vector<uint8_t>(64));
  EXPECT_EQ(openError(path),
            "model-00002-of-00003.safetensors: tensor "
            "'model.layers.3.mlp.gate.weight': data_offsets [0, 64] hold 64 "
            "bytes, shape [8, 8] of BF16 needs 128");
}

TEST(Safetensors, ShapeTooLarge) {
  ScratchDirectory scratch;
  EXPECT_EQ(
      errorForEntry(
          scratch,
          R"({"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]})"),
      "x.safetensors: tensor 'w': shape [4294967296, 4294967296] of F32 is "
      "too large");
}

TEST(Safetensors, Truncated) {
  ScratchDirectory scratch;
  std::string path = scratch.file("x.safetensors");
  testing::writeRawSafetensors(
      path,
      R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
          "b": {"dtype": "F32", "shape": [12], "data_offsets": [16, 64]}})",
      std::vector<uint8_t>(60));
  EXPECT_EQ(openError(path),
            "x.safetensors: truncated: header says 64 bytes of data, file has "
            "60");
}

TEST(Safetensors, OverlappingTensors) {
  ScratchDirectory scratch;
  EXPECT_EQ(
      errorForEntry(scratch,
                    R"({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                        "v": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]})"),
      "x.safetensors: tensors 'w' [0, 16] and 'v' [8, 24] overlap");
  std::string path = scratch.file("y.safetensors");
  testing::writeRawSafetensors(
      path,
      R"({"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]},
          "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
      std::vector<uint8_t>(32));
  EXPECT_EQ(openError(path),
            "y.safetensors: tensors 'a' [0, 32] and 'b' [8, 12] overlap");
}

TEST(Safetensors, EmptyTensorsOverlapNothing) {
  ScratchDirectory scratch;
  EXPECT_EQ(
      errorForEntry(scratch,
                    R"({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                    "v": {"dtype": "BF16", "shape": [0], "data_offsets": [8, 8]})"),
      "");
}

TEST(Safetensors, UnalignedDataIsServed) {
  // A 3-byte header puts the data at offset 11: views need not be aligned.
  ScratchDirectory scratch;
  std::string path = scratch.file("x.safetensors");
  std::string header =
      R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
  header += std::string((8 - header.size() % 8) + 3, ' ');
  testing::writeRawSafetensors(path, header, testing::f32Bytes({2.5f}));
  Result<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok()) << file.error().message();
  const TensorView *w = (*file)->find("w");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w->data) % 4, 3u);
  float value;
  std::memcpy(&value, w->data, 4);
  EXPECT_EQ(value, 2.5f);
}

} // namespace
} // namespace moe
