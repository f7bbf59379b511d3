// deviant/tokenizer/regex.hpp — a small PCRE2 wrapper for pre-tokenizer, normalizer and decoder
// patterns. Why: tokenizer.json carries Oniguruma-style patterns (\p{L}, \p{N}, \p{Han},
// (?i:...), lookaround, possessive quantifiers); PCRE2 in UTF + UCP mode matches them with the same
// leftmost-first backtracking semantics. Patterns are JIT-compiled when the library supports it.
// The subject MUST be valid UTF-8 (callers validate first; matching uses PCRE2_NO_UTF_CHECK).
// Empty matches are reported on request, skipping one that directly follows the previous match
// (as `tokenizers` iterates matches). Script properties (\p{Han}) match the Script property as in
// Oniguruma, not PCRE2's default Script_Extensions. One difference from Oniguruma's \s: PCRE2
// also counts U+180E (Mongolian vowel separator) as white space.
#pragma once
#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "deviant/core/error.hpp"

namespace deviant::text {

class Regex {
public:
    explicit Regex(std::string_view pattern) : pattern_(pattern) {
        const std::string compiled = with_script_only_properties(pattern);
        int error_code = 0;
        PCRE2_SIZE error_offset = 0;
        pcre2_code* code = compile(compiled, &error_code, &error_offset);
        if (!code) fail("regex '{}': compile error at offset {}: {}", pattern, error_offset, message(error_code));
        code_.reset(code, pcre2_code_free);
        jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    }

    const std::string& pattern() const { return pattern_; }
    bool jit() const { return jit_; }

    // Byte ranges [begin, end) of the successive non-overlapping matches in subject: the non-empty
    // ones, and with include_empty also the empty ones (except one right where the previous match
    // ended).
    std::vector<std::pair<std::size_t, std::size_t>> find_all(std::string_view subject, bool include_empty = false) const {
        std::vector<std::pair<std::size_t, std::size_t>> matches;
        std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
            pcre2_match_data_create_from_pattern(code_.get(), nullptr), pcre2_match_data_free);
        DEVIANT_REQUIRE(md != nullptr, "regex '{}': out of memory", pattern_);
        std::size_t start = 0;
        std::optional<std::size_t> previous_end;
        while (start <= subject.size()) {
            const int rc = match(subject, start, md.get());
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) fail("regex '{}': match failed at byte {}: {}", pattern_, start, message(rc));
            const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
            const std::size_t b = ov[0], e = ov[1];
            if (e > b) {
                matches.emplace_back(b, e);
                start = e;
                previous_end = e;
            } else {  // empty match: kept on request, then step over one character
                if (include_empty && previous_end != b) {
                    matches.emplace_back(b, b);
                    previous_end = b;
                }
                if (b >= subject.size()) break;
                std::size_t next = b + 1;
                while (next < subject.size() && (static_cast<unsigned char>(subject[next]) & 0xC0) == 0x80) ++next;
                start = next;
            }
        }
        return matches;
    }

private:
    static pcre2_code* compile(std::string_view pattern, int* error_code, PCRE2_SIZE* error_offset) {
        return pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, error_code,
                             error_offset, nullptr);
    }

    // \p{Han}, \P{Latin}, ...: Oniguruma matches the Script property, PCRE2 (10.40 on) the wider
    // Script_Extensions (U+3002 "。" is Han there). Script names are spelled \p{sc:Name} for PCRE2
    // when it knows that form; everything else is left as written.
    static std::string with_script_only_properties(std::string_view pattern) {
        std::string out;
        out.reserve(pattern.size());
        for (std::size_t i = 0; i < pattern.size(); ++i) {
            if (pattern[i] != '\\' || i + 1 >= pattern.size()) {
                out += pattern[i];
                continue;
            }
            const char kind = pattern[i + 1];
            const std::size_t close = pattern.find('}', i + 2);
            if ((kind == 'p' || kind == 'P') && i + 2 < pattern.size() && pattern[i + 2] == '{' && close != std::string_view::npos) {
                const std::string_view name = pattern.substr(i + 3, close - i - 3);
                const bool script_like = name.size() >= 3 && std::isupper(static_cast<unsigned char>(name[0])) &&
                                         std::all_of(name.begin(), name.end(), [](char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; });
                if (script_like && is_script_name(name)) {
                    out += fmt::format("\\{}{{sc:{}}}", kind, name);
                    i = close;
                    continue;
                }
            }
            out += pattern.substr(i, 2);  // any other escape, kept whole (so "\\p" stays a backslash and a p)
            ++i;
        }
        return out;
    }

    static bool is_script_name(std::string_view name) {
        int error_code = 0;
        PCRE2_SIZE error_offset = 0;
        pcre2_code* code = compile(fmt::format("\\p{{sc:{}}}", name), &error_code, &error_offset);
        if (code) pcre2_code_free(code);
        return code != nullptr;
    }

    // Per-thread JIT stack (the default 32 KiB is too small for long white-space runs).
    struct JitContext {
        pcre2_match_context* context = nullptr;
        pcre2_jit_stack* stack = nullptr;
        JitContext() {
            context = pcre2_match_context_create(nullptr);
            stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
            if (context && stack) pcre2_jit_stack_assign(context, nullptr, stack);
        }
        ~JitContext() {
            if (stack) pcre2_jit_stack_free(stack);
            if (context) pcre2_match_context_free(context);
        }
        JitContext(const JitContext&) = delete;
        JitContext& operator=(const JitContext&) = delete;
    };

    int match(std::string_view subject, std::size_t start, pcre2_match_data* md) const {
        const auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
        if (jit_) {
            thread_local JitContext jc;
            const int rc = pcre2_match(code_.get(), s, subject.size(), start, PCRE2_NO_UTF_CHECK, md, jc.context);
            if (rc != PCRE2_ERROR_JIT_STACKLIMIT) return rc;
            // fall through to the interpreter, which has its own (heap) limits
        }
        return pcre2_match(code_.get(), s, subject.size(), start, PCRE2_NO_UTF_CHECK | (jit_ ? PCRE2_NO_JIT : 0), md,
                           nullptr);
    }

    static std::string message(int code) {
        PCRE2_UCHAR buffer[256];
        const int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
        return n < 0 ? std::string("unknown PCRE2 error") : std::string(reinterpret_cast<const char*>(buffer), n);
    }

    std::string pattern_;
    std::shared_ptr<pcre2_code> code_;
    bool jit_ = false;
};

}  // namespace deviant::text
