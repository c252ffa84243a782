// GPT-2's byte-level alphabet: each of the 256 byte values is shown as a
// printable character (space becomes 'Ġ'), so that byte-level vocabularies
// are valid strings. The runtime works on raw bytes and uses this mapping
// only to read such vocabularies and to decode their tokens.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace moe::tokenizer {

uint32_t byteLevelCodePoint(unsigned char byte);

// Appends the raw bytes spelled by a byte-level token. Returns false, leaving
// `out` unchanged, if the token has a character outside the alphabet.
bool appendByteLevelBytes(std::string_view token, std::string &out);

} // namespace moe::tokenizer
