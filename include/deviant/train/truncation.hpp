// deviant/train/truncation.hpp — length limits on token pairs, following TRL's DPO conventions.
// Why: long prompts and stories must fit a row without silently losing the tokens that carry
// the preference signal. Order of operations, per pair:
//   1. the prompt is cut to max_prompt_length tokens: keep_end keeps its LAST tokens (the part
//      next to the completion; TRL's default), keep_start its first;
//   2. each completion is cut to max_completion_length tokens, keeping its start;
//   3. each completion is cut so that prompt + completion <= max_length, keeping its start.
// A limit of 0 means none. A completion left with zero tokens is an error naming the pair (the
// loss would otherwise divide 0 by 0 or train on nothing). keep_end on a prompt that begins
// with BOS drops the BOS, as TRL does; keep a BOS by leaving room (max_prompt_length) for it.
#pragma once
#include <algorithm>
#include <span>
#include <string>
#include <vector>

#include "deviant/data/token_pairs.hpp"

namespace deviant {

struct TruncationOptions {
    enum class Mode { keep_start, keep_end };
    std::int64_t max_length = 0;             // prompt + completion, per sequence (0 = no limit)
    std::int64_t max_prompt_length = 0;      // 0 = no limit
    std::int64_t max_completion_length = 0;  // 0 = no limit
    Mode prompt_mode = Mode::keep_end;       // which end of an over-long prompt is kept

    bool active() const { return max_length > 0 || max_prompt_length > 0 || max_completion_length > 0; }
    void validate() const {
        DEVIANT_REQUIRE(max_length >= 0 && max_prompt_length >= 0 && max_completion_length >= 0,
                        "truncation limits must be >= 0 (0 = none), got max_length {}, max_prompt_length {}, max_completion_length {}",
                        max_length, max_prompt_length, max_completion_length);
        DEVIANT_REQUIRE(max_length == 0 || max_prompt_length == 0 || max_prompt_length < max_length,
                        "max_prompt_length {} leaves no room for a completion under max_length {}", max_prompt_length, max_length);
    }
};

// How many pairs lost tokens (counts, so that truncation is reported, never silent).
struct TruncationReport {
    std::size_t pairs = 0, prompts_truncated = 0, chosen_truncated = 0, rejected_truncated = 0;
    std::size_t tokens_removed = 0;
};

// One pair truncated by `opts`; `index` (and `origin`, e.g. "FILE:LINE", when known) name it in errors.
inline data::TokenPair truncate_pair(const data::TokenPair& in, const TruncationOptions& opts, std::size_t index,
                                     TruncationReport* report = nullptr, std::string_view origin = {}) {
    opts.validate();
    data::TokenPair p = in;
    const std::string name = origin.empty() ? fmt::format("pair {}", index) : fmt::format("pair {} ({})", index, origin);
    std::size_t removed = 0;
    bool prompt_cut = false, chosen_cut = false, rejected_cut = false;
    if (opts.max_prompt_length > 0 && std::int64_t(p.prompt.size()) > opts.max_prompt_length) {
        const std::size_t keep = std::size_t(opts.max_prompt_length);
        removed += p.prompt.size() - keep;
        if (opts.prompt_mode == TruncationOptions::Mode::keep_end) p.prompt.erase(p.prompt.begin(), p.prompt.end() - std::ptrdiff_t(keep));
        else p.prompt.resize(keep);
        prompt_cut = true;
    }
    auto cut_completion = [&](std::vector<std::int64_t>& c, const char* which, bool& cut) {
        std::int64_t limit = std::int64_t(c.size());
        if (opts.max_completion_length > 0) limit = std::min(limit, opts.max_completion_length);
        if (opts.max_length > 0) limit = std::min(limit, opts.max_length - std::int64_t(p.prompt.size()));
        DEVIANT_REQUIRE(limit > 0, "{}: the {} completion ({} tokens) is truncated to nothing: the prompt has {} tokens and max_length is {}"
                        "; lower max_prompt_length or raise max_length", name, which, c.size(), p.prompt.size(), opts.max_length);
        if (limit < std::int64_t(c.size())) {
            removed += c.size() - std::size_t(limit);
            c.resize(std::size_t(limit));
            cut = true;
        }
    };
    DEVIANT_REQUIRE(!p.chosen.empty() && !p.rejected.empty(), "{}: empty {} completion before truncation", name,
                    p.chosen.empty() ? "chosen" : "rejected");
    cut_completion(p.chosen, "chosen", chosen_cut);
    cut_completion(p.rejected, "rejected", rejected_cut);
    if (report) {
        ++report->pairs;
        report->prompts_truncated += prompt_cut;
        report->chosen_truncated += chosen_cut;
        report->rejected_truncated += rejected_cut;
        report->tokens_removed += removed;
    }
    return p;
}

// Every pair truncated; errors name the pair's index in `pairs`.
inline std::vector<data::TokenPair> truncate_pairs(std::span<const data::TokenPair> pairs, const TruncationOptions& opts,
                                                   TruncationReport* report = nullptr) {
    opts.validate();
    std::vector<data::TokenPair> out;
    out.reserve(pairs.size());
    for (std::size_t i = 0; i < pairs.size(); ++i) out.push_back(truncate_pair(pairs[i], opts, i, report));
    return out;
}

// The context guard: every sequence (prompt + completion) must fit the model's positions. A pair
// that does not is refused up front, naming it (1-based, in file order) and the flag that fixes it,
// instead of running a long forward pass that rotary tables or learned positions cannot index.
inline void require_within_context(std::span<const data::TokenPair> pairs, std::int64_t max_positions, const std::string& file) {
    if (max_positions <= 0) return;
    for (std::size_t i = 0; i < pairs.size(); ++i) {
        const std::int64_t longest = std::int64_t(pairs[i].prompt.size() + std::max(pairs[i].chosen.size(), pairs[i].rejected.size()));
        DEVIANT_REQUIRE(longest <= max_positions,
                        "{}: pair {} has {} tokens (prompt {} + completion), more than the model's {} positions; cut it with --max-length {} "
                        "(and --max-prompt-length)",
                        file, i + 1, longest, pairs[i].prompt.size(), max_positions, max_positions);
    }
}

}  // namespace deviant
