// deviant/tokenizer/jinja.hpp — a Jinja2 interpreter for the chat templates models ship with.
// Why: a checkpoint's own prompt format is a Jinja2 program (tokenizer_config.json "chat_template",
// GGUF "tokenizer.chat_template"); training and generation must render it byte for byte as the
// reference tokenizer does: Jinja2's immutable sandbox with trim_blocks, lstrip_blocks and the
// loop-control extension, Python's semantics for values, and a tojson filter that keeps
// non-ASCII text (ensure_ascii=False).
//
// Values are nlohmann::ordered_json (insertion order kept, as in Python dicts) plus what JSON
// lacks: Undefined (a missing variable, attribute or item: prints as "", is falsy, iterates as
// empty; arithmetic on it, calling it or reading its attributes is an error, as with Jinja2's
// default Undefined), functions (globals, macros, bound methods) and objects (namespace(), loop).
//
// Covered: {{ }}, {% %}, {# #}, whitespace control (-, +), trim_blocks/lstrip_blocks, raw;
// if/elif/else, for (unpacking, `if` filter, else, loop.*), set (names, ns.attr, block set with
// filters), macro (defaults, keyword arguments, recursion), with, filter blocks, break/continue,
// generation; all operators including printf-style %; literals; the tests, filters, globals
// (range, dict, namespace, raise_exception, strftime_now) and str/dict/list methods chat
// templates use. Not covered: include/import/extends/block/call, recursive loops, macro
// varargs/kwargs/caller, integers beyond 64 bits (an error), Markup auto-escaping, and Unicode
// case mapping beyond Latin-1, Greek and Cyrillic. Tuples are lists here, so one prints as [a, b]
// where Python prints (a, b).
//
// Errors — syntax, unknown tag/filter/test, misuse of a value, a limit reached — throw
// deviant::Error with one line naming the template and line; raise_exception(msg) throws
// jinja::TemplateRaised, whose message() is the template's own text. Limits bound the source's
// nesting, the run-time recursion, the loop iterations and calls of one render, and the size of
// every string and list built.
#pragma once
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "deviant/core/error.hpp"

namespace deviant::jinja {

using Json = nlohmann::ordered_json;

struct Limits {
    std::size_t max_output_bytes = std::size_t(16) << 20;  // rendered text; also any string built on the way
    std::size_t max_list_items = std::size_t(1) << 20;     // items of any list built (or string iterated)
    int max_nesting = 100;                                  // blocks in blocks, brackets and operators in expressions (source)
    int max_call_depth = 50;                                // macro calls inside macro calls
    int max_eval_depth = 500;                               // run-time recursion of the interpreter, all causes together
    std::uint64_t max_steps = 2'000'000;                    // loop iterations, macro calls and range() items per render
};

// The template called raise_exception(message): it refuses the conversation it was given.
class TemplateRaised : public Error {
public:
    TemplateRaised(const std::string& where, std::string message)
        : Error(where + ": " + message), message_(std::move(message)) {}
    const std::string& message() const { return message_; }

private:
    std::string message_;
};

// ---------------------------------------------------------------------------------------------
// Text helpers: UTF-8, Python's notion of whitespace and case, Python's str()/repr() and
// json.dumps() output.
namespace detail {

inline std::size_t utf8_length_at(std::string_view s, std::size_t i) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    if (i + n > s.size()) return 1;
    for (std::size_t k = 1; k < n; ++k)
        if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 1;
    return n;
}

// The code point starting at s[i] (n bytes long, from utf8_length_at); a byte that does not start
// a valid sequence stands for itself.
inline char32_t decode_at(std::string_view s, std::size_t i, std::size_t n) {
    const auto b = [&](std::size_t k) { return char32_t(static_cast<unsigned char>(s[i + k])); };
    switch (n) {
        case 2: return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
        case 3: return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
        case 4: return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
        default: return b(0);
    }
}

inline void append_utf8(std::string& out, char32_t c) {
    if (c < 0x80) {
        out += char(c);
    } else if (c < 0x800) {
        out += char(0xC0 | (c >> 6));
        out += char(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        out += char(0xE0 | (c >> 12));
        out += char(0x80 | ((c >> 6) & 0x3F));
        out += char(0x80 | (c & 0x3F));
    } else {
        out += char(0xF0 | (c >> 18));
        out += char(0x80 | ((c >> 12) & 0x3F));
        out += char(0x80 | ((c >> 6) & 0x3F));
        out += char(0x80 | (c & 0x3F));
    }
}

// Byte offsets of the code points of s, with s.size() appended.
inline std::vector<std::size_t> code_point_offsets(std::string_view s) {
    std::vector<std::size_t> at;
    at.reserve(s.size() + 1);
    for (std::size_t i = 0; i < s.size(); i += utf8_length_at(s, i)) at.push_back(i);
    at.push_back(s.size());
    return at;
}

inline std::size_t code_point_count(std::string_view s) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < s.size(); i += utf8_length_at(s, i)) ++n;
    return n;
}

template <class F>
void for_each_code_point(std::string_view s, F&& f) {
    for (std::size_t i = 0; i < s.size();) {
        const std::size_t n = utf8_length_at(s, i);
        f(decode_at(s, i, n), i, n);
        i += n;
    }
}

// Python's str.isspace() set.
inline bool is_space(char32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

inline bool all_space(std::string_view s) {
    if (s.empty()) return false;
    bool all = true;
    for_each_code_point(s, [&](char32_t c, std::size_t, std::size_t) { all = all && is_space(c); });
    return all;
}

// Strips code points for which `strip` is true from either end.
template <class Pred>
std::string_view strip_if(std::string_view s, bool left, bool right, Pred strip) {
    std::size_t begin = 0, end = s.size();
    if (left) {
        while (begin < end) {
            const std::size_t n = utf8_length_at(s, begin);
            if (!strip(decode_at(s, begin, n))) break;
            begin += n;
        }
    }
    if (right) {
        std::size_t keep_end = begin;  // end of the last code point that is kept
        for (std::size_t i = begin; i < end;) {
            const std::size_t n = utf8_length_at(s, i);
            if (!strip(decode_at(s, i, n))) keep_end = i + n;
            i += n;
        }
        end = keep_end;
    }
    return s.substr(begin, end - begin);
}

inline std::string_view strip_space(std::string_view s, bool left = true, bool right = true) {
    return strip_if(s, left, right, is_space);
}

inline std::string_view strip_chars(std::string_view s, std::string_view chars, bool left, bool right) {
    std::vector<char32_t> set;
    for_each_code_point(chars, [&](char32_t c, std::size_t, std::size_t) { set.push_back(c); });
    return strip_if(s, left, right, [&](char32_t c) { return std::find(set.begin(), set.end(), c) != set.end(); });
}

// Case mapping for ASCII, Latin-1, Greek and Cyrillic letters.
inline char32_t to_upper(char32_t c) {
    if (c >= 'a' && c <= 'z') return c - 32;
    if (c < 0x80) return c;
    if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 0x20;
    if (c == 0xFF) return 0x178;
    if (c == 0xB5) return 0x39C;
    if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 0x20;
    if (c == 0x3C2) return 0x3A3;
    if (c >= 0x430 && c <= 0x44F) return c - 0x20;
    if (c >= 0x450 && c <= 0x45F) return c - 0x50;
    return c;
}

inline char32_t to_lower(char32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c < 0x80) return c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 0x20;
    if (c == 0x178) return 0xFF;
    if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 0x20;
    if (c >= 0x410 && c <= 0x42F) return c + 0x20;
    if (c >= 0x400 && c <= 0x40F) return c + 0x50;
    return c;
}

inline bool is_cased(char32_t c) { return to_upper(c) != c || to_lower(c) != c || c == 0xDF; }
inline bool is_upper(char32_t c) { return to_lower(c) != c; }
inline bool is_lower(char32_t c) { return to_upper(c) != c || c == 0xDF; }
inline bool is_digit(char32_t c) { return c >= '0' && c <= '9'; }
// Letters: ASCII ones, and every non-ASCII code point that is not whitespace or Latin-1 punctuation.
inline bool is_alpha(char32_t c) {
    if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    if (c < 0xC0) return c == 0xAA || c == 0xB5 || c == 0xBA;
    return c != 0xD7 && c != 0xF7 && !is_space(c) && !(c >= 0x2000 && c <= 0x206F) && !(c >= 0x3000 && c <= 0x303F);
}

template <class F>
std::string map_code_points(std::string_view s, F&& f) {
    std::string out;
    out.reserve(s.size());
    for_each_code_point(s, [&](char32_t c, std::size_t i, std::size_t n) {
        const char32_t m = f(c);
        if (m == c) out.append(s.substr(i, n));
        else append_utf8(out, m);
    });
    return out;
}

inline std::string upper(std::string_view s) { return map_code_points(s, [](char32_t c) { return to_upper(c); }); }
inline std::string lower(std::string_view s) { return map_code_points(s, [](char32_t c) { return to_lower(c); }); }

// Python's str.capitalize(): first code point upper case, the rest lower case.
inline std::string capitalize(std::string_view s) {
    bool first = true;
    return map_code_points(s, [&](char32_t c) {
        const char32_t m = first ? to_upper(c) : to_lower(c);
        first = false;
        return m;
    });
}

// Python's str.title(): a cased code point after a cased one is lowered, any other is raised.
inline std::string title_words(std::string_view s) {
    bool previous_cased = false;
    return map_code_points(s, [&](char32_t c) {
        const char32_t m = previous_cased ? to_lower(c) : to_upper(c);
        previous_cased = is_cased(c);
        return m;
    });
}

// Python's str.splitlines() boundaries: the length of the line break at s[i], 0 if none.
inline std::size_t line_break_at(std::string_view s, std::size_t i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\r') return i + 1 < s.size() && s[i + 1] == '\n' ? 2 : 1;
    if (c == '\n' || c == 0x0B || c == 0x0C || (c >= 0x1C && c <= 0x1E)) return 1;
    if (c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) == 0x85) return 2;
    if (c == 0xE2 && i + 2 < s.size() && static_cast<unsigned char>(s[i + 1]) == 0x80 &&
        (static_cast<unsigned char>(s[i + 2]) == 0xA8 || static_cast<unsigned char>(s[i + 2]) == 0xA9))
        return 3;
    return 0;
}

inline std::vector<std::string> split_lines(std::string_view s, bool keep_ends = false) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    for (std::size_t i = 0; i < s.size();) {
        const std::size_t n = line_break_at(s, i);
        if (n == 0) {
            ++i;
            continue;
        }
        lines.emplace_back(s.substr(start, (keep_ends ? i + n : i) - start));
        i += n;
        start = i;
    }
    if (start < s.size()) lines.emplace_back(s.substr(start));
    return lines;
}

// Python's repr() of a float: the shortest text that reads back the same, fixed notation for
// exponents -4 to 15, otherwise scientific with a two-digit (or longer) exponent.
inline std::string format_float(double d) {
    if (std::isnan(d)) return "nan";
    if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
    if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
    const std::string_view sci(buf, std::size_t(r.ptr - buf));  // [-]d[.ddd]e[+-]xx
    const bool negative = sci.front() == '-';
    const std::size_t e_at = sci.find('e');
    std::string digits;
    for (char c : sci.substr(negative ? 1 : 0, e_at - (negative ? 1 : 0)))
        if (c != '.') digits += c;
    int exponent = 0;
    std::from_chars(sci.data() + e_at + 1 + (sci[e_at + 1] == '+' ? 1 : 0), sci.data() + sci.size(), exponent);
    std::string out = negative ? "-" : "";
    if (exponent >= -4 && exponent < 16) {
        if (exponent >= 0) {
            const auto int_digits = std::size_t(exponent) + 1;
            if (digits.size() <= int_digits) {
                out += digits + std::string(int_digits - digits.size(), '0') + ".0";
            } else {
                out += digits.substr(0, int_digits) + "." + digits.substr(int_digits);
            }
        } else {
            out += "0." + std::string(std::size_t(-exponent - 1), '0') + digits;
        }
    } else {
        out += digits.substr(0, 1);
        if (digits.size() > 1) out += "." + digits.substr(1);
        out += fmt::format("e{}{:02d}", exponent < 0 ? '-' : '+', std::abs(exponent));
    }
    return out;
}

// Code points Python's repr() escapes (beyond the ASCII controls): separators, format
// characters, private use and the like.
inline bool repr_escapes(char32_t c) {
    return c < 0x20 || c == 0x7F || (c >= 0x80 && c <= 0xA0) || c == 0xAD || c == 0x1680 || (c >= 0x2000 && c <= 0x200F) ||
           (c >= 0x2028 && c <= 0x202F) || (c >= 0x205F && c <= 0x2064) || c == 0x3000 || (c >= 0xD800 && c <= 0xF8FF) ||
           c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFB) || c == 0xFFFE || c == 0xFFFF;
}

// Python's repr() of a str.
inline std::string repr_string(std::string_view s) {
    const char quote = s.find('\'') != std::string_view::npos && s.find('"') == std::string_view::npos ? '"' : '\'';
    std::string out(1, quote);
    for_each_code_point(s, [&](char32_t c, std::size_t i, std::size_t n) {
        if (c == char32_t(quote) || c == '\\') {
            out += '\\';
            out += char(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if (repr_escapes(c)) {
            if (c < 0x100) out += fmt::format("\\x{:02x}", std::uint32_t(c));
            else out += fmt::format("\\u{:04x}", std::uint32_t(c));
        } else {
            out.append(s.substr(i, n));
        }
    });
    out += quote;
    return out;
}

// A JSON string as Python's json.dumps writes it.
inline void dump_json_string(std::string& out, std::string_view s, bool ensure_ascii) {
    out += '"';
    for_each_code_point(s, [&](char32_t c, std::size_t i, std::size_t n) {
        switch (c) {
            case '"': out += "\\\""; return;
            case '\\': out += "\\\\"; return;
            case '\n': out += "\\n"; return;
            case '\r': out += "\\r"; return;
            case '\t': out += "\\t"; return;
            case '\b': out += "\\b"; return;
            case '\f': out += "\\f"; return;
            default: break;
        }
        if (c < 0x20) {
            out += fmt::format("\\u{:04x}", std::uint32_t(c));
        } else if (ensure_ascii && c >= 0x80) {
            if (c >= 0x10000) {
                const char32_t v = c - 0x10000;
                out += fmt::format("\\u{:04x}\\u{:04x}", std::uint32_t(0xD800 + (v >> 10)), std::uint32_t(0xDC00 + (v & 0x3FF)));
            } else {
                out += fmt::format("\\u{:04x}", std::uint32_t(c));
            }
        } else {
            out.append(s.substr(i, n));
        }
    });
    out += '"';
}

inline std::string html_escape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&#34;"; break;
            case '\'': out += "&#39;"; break;
            default: out += c;
        }
    }
    return out;
}

// A number as Python sees it: bools are the integers 0 and 1.
struct Number {
    bool is_float = false;
    std::int64_t i = 0;
    double f = 0;
    double as_double() const { return is_float ? f : double(i); }
};

inline std::optional<Number> number_of(const Json& j) {
    switch (j.type()) {
        case Json::value_t::boolean: return Number{false, j.get<bool>() ? 1 : 0, 0};
        case Json::value_t::number_integer: return Number{false, j.get<std::int64_t>(), 0};
        case Json::value_t::number_unsigned: {
            const auto u = j.get<std::uint64_t>();
            if (u <= std::uint64_t(std::numeric_limits<std::int64_t>::max())) return Number{false, std::int64_t(u), 0};
            return Number{true, 0, double(u)};
        }
        case Json::value_t::number_float: return Number{true, 0, j.get<double>()};
        default: return std::nullopt;
    }
}

inline Json json_of(const Number& n) { return n.is_float ? Json(n.f) : Json(n.i); }

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Values.

class Interpreter;
class Value;

struct CallArgs {
    std::vector<Value> positional;
    std::vector<std::pair<std::string, Value>> keyword;
};

using NativeFunction = std::function<Value(Interpreter&, CallArgs&)>;

struct Function {
    std::string name;
    NativeFunction call;
};

struct Object;

class Value {
public:
    enum class Kind : std::uint8_t { undefined, data, function, object };

    Value() = default;  // undefined, with no hint

    static Value undefined(std::string hint) {
        Value v;
        v.ptr_ = std::make_shared<const std::string>(std::move(hint));
        return v;
    }
    static Value data(Json j) {
        auto owner = std::make_shared<const Json>(std::move(j));
        Value v;
        v.kind_ = Kind::data;
        v.ptr_ = std::move(owner);
        return v;
    }
    static Value function(std::string name, NativeFunction call) {
        Value v;
        v.kind_ = Kind::function;
        v.ptr_ = std::make_shared<const Function>(Function{std::move(name), std::move(call)});
        return v;
    }
    static Value object(std::shared_ptr<Object> o) {
        Value v;
        v.kind_ = Kind::object;
        v.ptr_ = std::move(o);
        return v;
    }
    static Value string(std::string s) { return data(Json(std::move(s))); }
    static Value boolean(bool b) { return data(Json(b)); }
    static Value integer(std::int64_t i) { return data(Json(i)); }
    static Value none() { return data(Json(nullptr)); }

    Kind kind() const { return kind_; }
    bool is_undefined() const { return kind_ == Kind::undefined; }
    bool is_data() const { return kind_ == Kind::data; }
    bool is_function() const { return kind_ == Kind::function; }
    bool is_object() const { return kind_ == Kind::object; }
    bool is_string() const { return is_data() && json().is_string(); }
    bool is_none() const { return is_data() && json().is_null(); }
    bool is_array() const { return is_data() && json().is_array(); }
    bool is_mapping() const { return is_data() && json().is_object(); }
    bool is_number() const { return is_data() && (json().is_number() || json().is_boolean()); }

    const Json& json() const { return *static_cast<const Json*>(ptr_.get()); }
    const std::string& str() const { return json().get_ref<const std::string&>(); }
    const std::string& hint() const {
        static const std::string none;
        return ptr_ ? *static_cast<const std::string*>(ptr_.get()) : none;
    }
    const Function& func() const { return *static_cast<const Function*>(ptr_.get()); }
    Object& obj() const { return *const_cast<Object*>(static_cast<const Object*>(ptr_.get())); }
    const void* identity() const { return ptr_.get(); }

    // Element i of an array value, and a member of an array or object value: views sharing the
    // whole value's storage (no copy).
    Value element(std::size_t i) const { return member(json()[i]); }
    Value member(const Json& j) const {
        if (j.is_discarded()) return undefined("an undefined value stored in a list or dict");
        Value v;
        v.kind_ = Kind::data;
        v.ptr_ = std::shared_ptr<const void>(ptr_, &j);
        return v;
    }
    // Members of a JSON value `owner` keeps alive.
    static Value view(const std::shared_ptr<const Json>& owner, const Json* j) {
        Value root;
        root.kind_ = Kind::data;
        root.ptr_ = owner;
        return root.member(*j);
    }

private:
    Kind kind_ = Kind::undefined;
    std::shared_ptr<const void> ptr_;  // the Json (or a part of one), Function, Object, or undefined's hint
};

// namespace() objects (attributes assignable) and loop objects (read only).
struct Object {
    std::string type;
    bool assignable = false;
    std::vector<std::pair<std::string, Value>> attributes;
    // A loop object computes its attributes from the loop's items and position.
    std::shared_ptr<const std::vector<Value>> loop_items;
    std::size_t loop_index = 0;

    Value* find(std::string_view name) {
        for (auto& [k, v] : attributes)
            if (k == name) return &v;
        return nullptr;
    }
    void set(const std::string& name, Value v) {
        if (Value* existing = find(name)) *existing = std::move(v);
        else attributes.emplace_back(name, std::move(v));
    }
};

// ---------------------------------------------------------------------------------------------
// Lexer: the template text as a token stream, with Jinja2's whitespace rules applied to the
// text between tags.
namespace detail {

enum class Tok : std::uint8_t { text, print_begin, print_end, block_begin, block_end, name, string, integer, floating, op, eof };

struct Token {
    Tok type;
    std::string text;  // text, name, operator, or the decoded string literal / number spelling
    int line;
};

inline std::string describe(const Token& t) {
    switch (t.type) {
        case Tok::text: return "template text";
        case Tok::print_begin: return "'{{'";
        case Tok::print_end: return "'}}'";
        case Tok::block_begin: return "'{%'";
        case Tok::block_end: return "'%}'";
        case Tok::string: return "a string";
        case Tok::integer:
        case Tok::floating: return "number " + t.text;
        case Tok::eof: return "the end of the template";
        default: return "'" + t.text + "'";
    }
}

class Lexer {
public:
    Lexer(std::string_view source, std::string where) : where_(std::move(where)) {
        // Line breaks become "\n", and one trailing line break is dropped (keep_trailing_newline=False).
        src_.reserve(source.size());
        for (std::size_t i = 0; i < source.size(); ++i) {
            if (source[i] == '\r') {
                src_ += '\n';
                if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
            } else {
                src_ += source[i];
            }
        }
        if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    }

    std::vector<Token> run() {
        while (pos_ < src_.size()) {
            const std::size_t tag = next_tag(pos_);
            if (tag == std::string::npos) {
                emit_text(std::string_view(src_).substr(pos_));
                break;
            }
            const char kind = src_[tag + 1];
            std::size_t after = tag + 2;
            char sign = 0;
            if (after < src_.size() && (src_[after] == '-' || src_[after] == '+')) sign = src_[after++];
            std::string_view text = std::string_view(src_).substr(pos_, tag - pos_);
            const int text_lines = int(std::count(text.begin(), text.end(), '\n'));
            text = strip_before_tag(text, kind, sign);
            emit_text(text);
            line_ += text_lines - int(std::count(text.begin(), text.end(), '\n'));
            if (kind == '#') {
                comment(after);
            } else if (kind == '%' && raw_block(after)) {
                // handled
            } else {
                tag_body(kind, after);
            }
        }
        tokens_.push_back({Tok::eof, "", line_});
        return std::move(tokens_);
    }

private:
    [[noreturn]] void fail(const std::string& what) const { deviant::fail("{}, line {}: {}", where_, line_, what); }

    std::size_t next_tag(std::size_t from) const {
        for (std::size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1))
            if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
        return std::string::npos;
    }

    // "-" strips all whitespace before the tag; otherwise lstrip_blocks strips the spaces and tabs
    // that start the tag's line, for block tags and comments, unless the tag says "+".
    std::string_view strip_before_tag(std::string_view text, char kind, char sign) const {
        if (sign == '-') return strip_space(text, false, true);
        if (sign == '+' || kind == '{') return text;
        const std::size_t nl = text.rfind('\n');
        const std::size_t line_start = nl == std::string_view::npos ? 0 : nl + 1;
        if ((line_start > 0 || line_starting_) && all_space(text.substr(line_start))) return text.substr(0, line_start);
        return text;
    }

    void emit_text(std::string_view text) {
        if (!text.empty()) tokens_.push_back({Tok::text, std::string(text), line_});
        line_ += int(std::count(text.begin(), text.end(), '\n'));
    }

    // Moves past a closing delimiter that ends at `end`, applying "-" (strip all whitespace after)
    // or trim_blocks (drop one line break after block tags and comments).
    void finish_tag(std::size_t end, bool strip_after, bool trim_newline) {
        if (strip_after) {
            while (end < src_.size()) {
                const std::size_t n = utf8_length_at(src_, end);
                if (!is_space(decode_at(src_, end, n))) break;
                end += n;
            }
        } else if (trim_newline && end < src_.size() && src_[end] == '\n') {
            ++end;
        }
        line_ += int(std::count(src_.begin() + std::ptrdiff_t(pos_), src_.begin() + std::ptrdiff_t(end), '\n'));
        line_starting_ = end > 0 && src_[end - 1] == '\n';
        pos_ = end;
    }

    void comment(std::size_t after) {
        const std::size_t close = src_.find("#}", after);
        if (close == std::string::npos) fail("comment '{#' is never closed with '#}'");
        pos_ = close;  // newlines inside the comment are counted by finish_tag
        const char before = close > after ? src_[close - 1] : '\0';
        line_ += int(std::count(src_.begin() + std::ptrdiff_t(after), src_.begin() + std::ptrdiff_t(close), '\n'));
        finish_tag(close + 2, before == '-', before != '+');
    }

    static bool is_ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
    static bool is_ident(char c) { return is_ident_start(c) || (c >= '0' && c <= '9'); }

    std::size_t skip_ascii_space(std::size_t i) const {
        while (i < src_.size() && (src_[i] == ' ' || src_[i] == '\t' || src_[i] == '\n' || src_[i] == '\f' || src_[i] == '\v')) ++i;
        return i;
    }

    // {% raw %}...{% endraw %}: the text in between is output as is.
    bool raw_block(std::size_t after) {
        std::size_t i = skip_ascii_space(after);
        if (src_.compare(i, 3, "raw") != 0 || (i + 3 < src_.size() && is_ident(src_[i + 3]))) return false;
        i = skip_ascii_space(i + 3);
        bool strip_after = false;
        if (src_.compare(i, 3, "-%}") == 0) {
            strip_after = true;
            i += 3;
        } else if (src_.compare(i, 2, "%}") == 0) {
            i += 2;
        } else {
            return false;
        }
        pos_ = after;
        finish_tag(i, strip_after, false);
        for (std::size_t at = src_.find("{%", pos_); at != std::string::npos; at = src_.find("{%", at + 2)) {
            std::size_t j = at + 2;
            char sign = 0;
            if (j < src_.size() && (src_[j] == '-' || src_[j] == '+')) sign = src_[j++];
            j = skip_ascii_space(j);
            if (src_.compare(j, 6, "endraw") != 0 || (j + 6 < src_.size() && is_ident(src_[j + 6]))) continue;
            j = skip_ascii_space(j + 6);
            std::size_t end;
            bool strip = false, plus = false;
            if (src_.compare(j, 3, "+%}") == 0) {
                end = j + 3;
                plus = true;
            } else if (src_.compare(j, 3, "-%}") == 0) {
                end = j + 3;
                strip = true;
            } else if (src_.compare(j, 2, "%}") == 0) {
                end = j + 2;
            } else {
                continue;
            }
            std::string_view text = std::string_view(src_).substr(pos_, at - pos_);
            const int text_lines = int(std::count(text.begin(), text.end(), '\n'));
            text = strip_before_tag(text, '%', sign);
            emit_text(text);
            line_ += text_lines - int(std::count(text.begin(), text.end(), '\n'));
            pos_ = at;
            finish_tag(end, strip, !plus);
            return true;
        }
        fail("'{% raw %}' is never closed with '{% endraw %}'");
    }

    void tag_body(char kind, std::size_t after) {
        const bool block = kind == '%';
        tokens_.push_back({block ? Tok::block_begin : Tok::print_begin, "", line_});
        std::vector<char> brackets;
        std::size_t p = after;
        const int open_line = line_;
        for (;;) {
            if (p >= src_.size())
                deviant::fail("{}, line {}: '{}' opened here is never closed with '{}'", where_, open_line, block ? "{%" : "{{",
                              block ? "%}" : "}}");
            if (brackets.empty()) {
                if (block) {
                    if (src_.compare(p, 3, "+%}") == 0) return close_tag(Tok::block_end, p, p + 3, false, false);
                    if (src_.compare(p, 3, "-%}") == 0) return close_tag(Tok::block_end, p, p + 3, true, false);
                    if (src_.compare(p, 2, "%}") == 0) return close_tag(Tok::block_end, p, p + 2, false, true);
                } else {
                    if (src_.compare(p, 3, "-}}") == 0) return close_tag(Tok::print_end, p, p + 3, true, false);
                    if (src_.compare(p, 2, "}}") == 0) return close_tag(Tok::print_end, p, p + 2, false, false);
                }
            }
            const char c = src_[p];
            const std::size_t space = utf8_length_at(src_, p);
            if (is_space(decode_at(src_, p, space))) {
                if (c == '\n') ++line_;
                p += space;
                continue;
            }
            if (c >= '0' && c <= '9') {
                p = number(p);
            } else if (is_ident_start(c)) {
                std::size_t e = p;
                while (e < src_.size() && is_ident(src_[e])) ++e;
                tokens_.push_back({Tok::name, src_.substr(p, e - p), line_});
                p = e;
            } else if (c == '\'' || c == '"') {
                p = string_literal(p);
            } else {
                p = op(p, brackets);
            }
        }
    }

    void close_tag(Tok type, std::size_t at, std::size_t end, bool strip_after, bool trim_newline) {
        tokens_.push_back({type, "", line_});
        pos_ = at;
        finish_tag(end, strip_after, trim_newline);
    }

    // Digits with single underscores between them.
    std::size_t digits(std::size_t p) const {
        if (p >= src_.size() || src_[p] < '0' || src_[p] > '9') return p;
        std::size_t e = p;
        while (e < src_.size()) {
            if (src_[e] >= '0' && src_[e] <= '9') ++e;
            else if (src_[e] == '_' && e + 1 < src_.size() && src_[e + 1] >= '0' && src_[e + 1] <= '9') ++e;
            else break;
        }
        return e;
    }

    std::size_t number(std::size_t p) {
        const auto clean = [](std::string_view s) {
            std::string out;
            for (char c : s)
                if (c != '_') out += c;
            return out;
        };
        // 0b / 0o / 0x integers
        if (src_[p] == '0' && p + 1 < src_.size() && std::string_view("bBoOxX").find(src_[p + 1]) != std::string_view::npos) {
            const char base_char = char(src_[p + 1] | 0x20);
            const int base = base_char == 'b' ? 2 : base_char == 'o' ? 8 : 16;
            std::size_t e = p + 2;
            const auto ok = [&](char c) {
                const int d = (c >= '0' && c <= '9') ? c - '0' : ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') ? (c | 0x20) - 'a' + 10 : 99;
                return d < base;
            };
            while (e < src_.size() && (ok(src_[e]) || (src_[e] == '_' && e + 1 < src_.size() && ok(src_[e + 1])))) ++e;
            if (e > p + 2) {
                const std::string text = clean(std::string_view(src_).substr(p + 2, e - p - 2));
                std::int64_t v = 0;
                const auto r = std::from_chars(text.data(), text.data() + text.size(), v, base);
                if (r.ec != std::errc()) fail("integer literal '" + src_.substr(p, e - p) + "' is too large");
                tokens_.push_back({Tok::integer, std::to_string(v), line_});
                return e;
            }
        }
        const std::size_t int_end = digits(p);
        std::size_t e = int_end;
        bool is_float = false;
        const bool after_dot = p > 0 && src_[p - 1] == '.';
        if (!after_dot) {
            if (e < src_.size() && src_[e] == '.' && digits(e + 1) > e + 1) {
                e = digits(e + 1);
                is_float = true;
            }
            if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
                std::size_t x = e + 1;
                if (x < src_.size() && (src_[x] == '+' || src_[x] == '-')) ++x;
                if (digits(x) > x) {
                    e = digits(x);
                    is_float = true;
                }
            }
        }
        if (!is_float) {
            // A decimal integer is [1-9](_?\d)* or 0(_?0)*.
            if (src_[p] == '0') {
                e = p + 1;
                while (e < src_.size() && (src_[e] == '0' || (src_[e] == '_' && e + 1 < src_.size() && src_[e + 1] == '0'))) ++e;
            }
            const std::string text = clean(std::string_view(src_).substr(p, e - p));
            std::int64_t v = 0;
            const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
            if (r.ec != std::errc()) fail("integer literal '" + text + "' is too large");
            tokens_.push_back({Tok::integer, text, line_});
            return e;
        }
        tokens_.push_back({Tok::floating, clean(std::string_view(src_).substr(p, e - p)), line_});
        return e;
    }

    static int hex_value(char c) {
        if (c >= '0' && c <= '9') return c - '0';
        c = char(c | 0x20);
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    }

    // A quoted string; escapes as in Python string literals.
    std::size_t string_literal(std::size_t p) {
        const char quote = src_[p];
        const int start_line = line_;
        std::string out;
        std::size_t i = p + 1;
        for (;;) {
            if (i >= src_.size()) deviant::fail("{}, line {}: string literal is never closed", where_, start_line);
            const char c = src_[i];
            if (c == quote) break;
            if (c == '\n') ++line_;
            if (c != '\\') {
                out += c;
                ++i;
                continue;
            }
            if (i + 1 >= src_.size()) deviant::fail("{}, line {}: string literal is never closed", where_, start_line);
            const char e = src_[i + 1];
            i += 2;
            switch (e) {
                case '\n': ++line_; break;  // line continuation
                case '\\': out += '\\'; break;
                case '\'': out += '\''; break;
                case '"': out += '"'; break;
                case 'a': out += '\a'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'v': out += '\v'; break;
                case 'x':
                case 'u':
                case 'U': {
                    const std::size_t count = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                    char32_t v = 0;
                    for (std::size_t k = 0; k < count; ++k) {
                        const int h = i + k < src_.size() ? hex_value(src_[i + k]) : -1;
                        if (h < 0) fail(fmt::format("truncated \\{} escape in a string literal", e));
                        v = v * 16 + char32_t(h);
                    }
                    if (v > 0x10FFFF) fail("\\U escape outside the Unicode range in a string literal");
                    append_utf8(out, v);
                    i += count;
                    break;
                }
                default:
                    if (e >= '0' && e <= '7') {
                        char32_t v = char32_t(e - '0');
                        for (int k = 0; k < 2 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7'; ++k) v = v * 8 + char32_t(src_[i++] - '0');
                        append_utf8(out, v);
                    } else {
                        out += '\\';  // unknown escapes keep their backslash
                        out += e;
                    }
            }
        }
        tokens_.push_back({Tok::string, std::move(out), start_line});
        return i + 1;
    }

    std::size_t op(std::size_t p, std::vector<char>& brackets) {
        static constexpr std::string_view two[] = {"//", "**", "==", "!=", ">=", "<="};
        for (std::string_view t : two)
            if (src_.compare(p, 2, t) == 0) {
                tokens_.push_back({Tok::op, std::string(t), line_});
                return p + 2;
            }
        const char c = src_[p];
        if (std::string_view("+-/*%~[](){}><=.:|,;").find(c) == std::string_view::npos) {
            const std::size_t n = utf8_length_at(src_, p);
            fail("unexpected character '" + src_.substr(p, n) + "'");
        }
        if (c == '(' || c == '[' || c == '{') {
            brackets.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
        } else if (c == ')' || c == ']' || c == '}') {
            if (brackets.empty()) fail(fmt::format("unexpected '{}'", c));
            if (brackets.back() != c) fail(fmt::format("unexpected '{}', expected '{}'", c, brackets.back()));
            brackets.pop_back();
        }
        tokens_.push_back({Tok::op, std::string(1, c), line_});
        return p + 1;
    }

    std::string src_;
    std::string where_;
    std::size_t pos_ = 0;
    int line_ = 1;
    bool line_starting_ = true;
    std::vector<Token> tokens_;
};

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Syntax tree.

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind : std::uint8_t {
    constant, name, list, dict, attribute, item, slice, call, filter, test, logical_not, negate, plus, binary, concat,
    compare, logical_and, logical_or, conditional
};

struct Expr {
    ExprKind kind;
    int line = 0;
    int depth = 1;
    std::string name;                                    // variable, attribute, filter, test or binary operator
    Value value;                                         // constant
    std::vector<ExprPtr> args;                           // list items; dict keys and values alternating; call, filter and
                                                         // test arguments; concat parts; compare operands; slice bounds
    std::vector<std::pair<std::string, ExprPtr>> kwargs;  // call, filter and test keyword arguments
    std::vector<std::string> ops;                        // compare operators, one per operand after the first
    ExprPtr a, b, c;                                     // object / operand / left; right / condition; else
    bool negated = false;                                // `is not`
};

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

enum class NodeKind : std::uint8_t { text, output, if_chain, for_loop, set, set_block, macro, filter_block, with, scope, loop_break, loop_continue };

// An assignment target: a name, names to unpack, or a namespace attribute (names[0].attribute).
struct Target {
    std::vector<std::string> names;
    std::string attribute;
    bool unpack = false;
};

struct Node {
    NodeKind kind;
    int line = 0;
    std::string text;              // text; macro name
    std::vector<ExprPtr> exprs;    // printed expressions; if conditions; for iterable (+ filter); set value; with values;
                                   // macro parameter defaults (null where none)
    std::vector<Body> bodies;      // if branches (+ else); for body (+ else); other blocks: the one body
    std::vector<Target> targets;   // for / set target; with targets
    std::vector<std::string> params;  // macro parameters
    ExprPtr filter;                // filter chain of a filter block or block set (innermost input null)
    bool has_else = false;
};

// ---------------------------------------------------------------------------------------------
// Parser.
namespace detail {

class Parser {
public:
    Parser(std::vector<Token> tokens, std::string where, const Limits& limits)
        : t_(std::move(tokens)), where_(std::move(where)), limits_(limits) {}

    Body parse_template() {
        Body body = subparse({});
        if (cur().type != Tok::eof) fail(cur().line, "unexpected " + describe(cur()));
        return body;
    }

private:
    using Names = std::vector<std::string_view>;

    const Token& cur() const { return t_[i_]; }
    const Token& peek(std::size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
    void advance() {
        if (i_ + 1 < t_.size()) ++i_;
    }
    bool is_op(std::string_view o) const { return cur().type == Tok::op && cur().text == o; }
    bool is_name(std::string_view n) const { return cur().type == Tok::name && cur().text == n; }
    bool skip_op(std::string_view o) {
        if (!is_op(o)) return false;
        advance();
        return true;
    }
    bool skip_name(std::string_view n) {
        if (!is_name(n)) return false;
        advance();
        return true;
    }

    [[noreturn]] void fail(int line, const std::string& what) const { deviant::fail("{}, line {}: {}", where_, line, what); }

    void expect_op(std::string_view o) {
        if (!skip_op(o)) fail(cur().line, fmt::format("expected '{}', got {}", o, describe(cur())));
    }
    std::string expect_name(const char* what) {
        if (cur().type != Tok::name) fail(cur().line, fmt::format("expected {}, got {}", what, describe(cur())));
        std::string n = cur().text;
        advance();
        return n;
    }
    void expect_block_end(std::string_view tag) {
        if (cur().type != Tok::block_end)
            fail(cur().line, fmt::format("expected '%}}' to end '{{% {} %}}', got {}", tag, describe(cur())));
        advance();
    }

    struct Depth {
        Parser& p;
        Depth(Parser& parser, int line) : p(parser) {
            if (++p.depth_ > p.limits_.max_nesting) p.fail(line, fmt::format("template nests more than {} levels deep", p.limits_.max_nesting));
        }
        ~Depth() { --p.depth_; }
    };

    ExprPtr make(ExprKind kind, int line) {
        auto e = std::make_unique<Expr>();
        e->kind = kind;
        e->line = line;
        return e;
    }
    // Records the depth of a node whose children are set; deep chains (a+a+a...) are refused too.
    ExprPtr done(ExprPtr e) {
        int d = 0;
        for (const ExprPtr* c : {&e->a, &e->b, &e->c})
            if (*c) d = std::max(d, (*c)->depth);
        for (const auto& x : e->args)
            if (x) d = std::max(d, x->depth);
        for (const auto& kv : e->kwargs) d = std::max(d, kv.second->depth);
        e->depth = d + 1;
        if (e->depth > 4 * limits_.max_nesting)
            fail(e->line, fmt::format("expression nests more than {} levels deep", 4 * limits_.max_nesting));
        return e;
    }

    // ---- statements ----

    static bool in(std::string_view name, const Names& names) { return std::find(names.begin(), names.end(), name) != names.end(); }

    // Parses until a block tag whose name is in `end` (left as the current token, after '{%').
    Body subparse(const Names& end) {
        Body body;
        for (;;) {
            const Token& t = cur();
            switch (t.type) {
                case Tok::eof: return body;
                case Tok::text: {
                    auto n = std::make_unique<Node>();
                    n->kind = NodeKind::text;
                    n->line = t.line;
                    n->text = t.text;
                    body.push_back(std::move(n));
                    advance();
                    break;
                }
                case Tok::print_begin: {
                    auto n = std::make_unique<Node>();
                    n->kind = NodeKind::output;
                    n->line = t.line;
                    advance();
                    n->exprs.push_back(parse_tuple(true, {}));
                    if (cur().type != Tok::print_end) fail(cur().line, "expected '}}' to end the expression, got " + describe(cur()));
                    advance();
                    body.push_back(std::move(n));
                    break;
                }
                case Tok::block_begin: {
                    advance();
                    if (cur().type != Tok::name) fail(cur().line, "expected a tag name after '{%', got " + describe(cur()));
                    if (in(cur().text, end)) return body;
                    body.push_back(statement(end));
                    break;
                }
                default: fail(t.line, "unexpected " + describe(t));
            }
        }
    }

    // Parses a block body up to one of `end`; the end tag's name is the current token on return.
    Body block_body(std::string_view tag, int open_line, const Names& end) {
        skip_op(":");
        expect_block_end(tag);
        Body body = subparse(end);
        if (cur().type == Tok::eof) {
            std::string names;
            for (auto e : end) names += (names.empty() ? "'" : " or '") + std::string(e) + "'";
            fail(open_line, fmt::format("'{{% {} %}}' is never closed: the template ends before {}", tag, names));
        }
        return body;
    }

    // Consumes the end tag (the current name) and its '%}'.
    void end_tag() {
        const std::string name = cur().text;
        advance();
        expect_block_end(name);
    }

    std::unique_ptr<Node> statement(const Names& enclosing_end) {
        const Token tag = cur();
        Depth depth(*this, tag.line);
        static const Names end_words = {"endif", "endfor", "endset", "endmacro", "endfilter", "endwith", "endgeneration",
                                        "elif", "else", "endraw", "endcall", "endblock"};
        auto n = std::make_unique<Node>();
        n->line = tag.line;
        const std::string& word = tag.text;
        if (word == "if") return parse_if(std::move(n));
        if (word == "for") return parse_for(std::move(n));
        if (word == "set") return parse_set(std::move(n));
        if (word == "macro") return parse_macro(std::move(n));
        if (word == "filter") return parse_filter_block(std::move(n));
        if (word == "with") return parse_with(std::move(n));
        if (word == "generation") {
            advance();
            n->kind = NodeKind::scope;
            n->bodies.push_back(block_body("generation", tag.line, {"endgeneration"}));
            end_tag();
            return n;
        }
        if (word == "print") {
            advance();
            n->kind = NodeKind::output;
            while (cur().type != Tok::block_end) {
                if (!n->exprs.empty()) expect_op(",");
                n->exprs.push_back(parse_expression(true));
            }
            expect_block_end("print");
            return n;
        }
        if (word == "break" || word == "continue") {
            if (loop_depth_ == 0) fail(tag.line, fmt::format("'{{% {} %}}' outside a for loop", word));
            advance();
            expect_block_end(word);
            n->kind = word == "break" ? NodeKind::loop_break : NodeKind::loop_continue;
            return n;
        }
        if (word == "include" || word == "import" || word == "from" || word == "extends" || word == "block" || word == "call" ||
            word == "autoescape")
            fail(tag.line, fmt::format("'{{% {} %}}' is not supported in chat templates", word));
        if (in(word, end_words)) {
            if (enclosing_end.empty()) fail(tag.line, fmt::format("unexpected '{{% {} %}}': no block is open", word));
            std::string names;
            for (auto e : enclosing_end) names += (names.empty() ? "'" : " or '") + std::string(e) + "'";
            fail(tag.line, fmt::format("unexpected '{{% {} %}}': expected {}", word, names));
        }
        fail(tag.line, fmt::format("unknown tag '{}'", word));
    }

    std::unique_ptr<Node> parse_if(std::unique_ptr<Node> n) {
        n->kind = NodeKind::if_chain;
        const int open_line = n->line;
        advance();  // if
        for (;;) {
            n->exprs.push_back(parse_tuple(false, {}));
            n->bodies.push_back(block_body("if", open_line, {"elif", "else", "endif"}));
            const std::string word = cur().text;
            advance();
            if (word == "elif") continue;
            if (word == "else") {
                n->has_else = true;
                n->bodies.push_back(block_body("else", open_line, {"endif"}));
                end_tag();
            } else {
                expect_block_end("endif");
            }
            return n;
        }
    }

    Target parse_target(bool allow_namespace, const Names& extra_end) {
        Target t;
        for (;;) {
            if (!t.names.empty()) {
                if (!skip_op(",")) break;
                if (cur().type != Tok::name || in(cur().text, extra_end)) break;
            }
            const int line = cur().line;
            if (cur().type == Tok::name && in(cur().text, extra_end)) fail(line, "expected a variable name, got '" + cur().text + "'");
            std::string name = expect_name("a variable name");
            if (name == "true" || name == "false" || name == "none" || name == "True" || name == "False" || name == "None")
                fail(line, fmt::format("cannot assign to '{}'", name));
            if (allow_namespace && is_op(".")) {
                advance();
                t.attribute = expect_name("an attribute name");
                t.names.push_back(std::move(name));
                if (is_op(",")) fail(line, "cannot unpack into a namespace attribute");
                return t;
            }
            t.names.push_back(std::move(name));
            if (!is_op(",")) break;
            t.unpack = true;
        }
        return t;
    }

    std::unique_ptr<Node> parse_for(std::unique_ptr<Node> n) {
        n->kind = NodeKind::for_loop;
        const int open_line = n->line;
        advance();  // for
        bool parenthesized = skip_op("(");
        n->targets.push_back(parse_target(false, {"in"}));
        if (parenthesized) expect_op(")");
        if (!skip_name("in")) fail(cur().line, "expected 'in' in '{% for %}', got " + describe(cur()));
        n->exprs.push_back(parse_tuple(false, {"recursive"}));
        if (skip_name("if")) n->exprs.push_back(parse_expression(true));
        if (is_name("recursive")) fail(cur().line, "recursive loops are not supported");
        ++loop_depth_;
        n->bodies.push_back(block_body("for", open_line, {"endfor", "else"}));
        --loop_depth_;
        const std::string word = cur().text;
        advance();
        if (word == "else") {
            n->has_else = true;
            n->bodies.push_back(block_body("else", open_line, {"endfor"}));
            end_tag();
        } else {
            expect_block_end("endfor");
        }
        return n;
    }

    std::unique_ptr<Node> parse_set(std::unique_ptr<Node> n) {
        const int open_line = n->line;
        advance();  // set
        n->targets.push_back(parse_target(true, {}));
        if (skip_op("=")) {
            n->kind = NodeKind::set;
            n->exprs.push_back(parse_tuple(true, {}));
            expect_block_end("set");
            return n;
        }
        n->kind = NodeKind::set_block;
        if (is_op("|")) n->filter = parse_filters(nullptr);
        n->bodies.push_back(block_body("set", open_line, {"endset"}));
        end_tag();
        return n;
    }

    std::unique_ptr<Node> parse_macro(std::unique_ptr<Node> n) {
        n->kind = NodeKind::macro;
        const int open_line = n->line;
        advance();  // macro
        n->text = expect_name("a macro name");
        expect_op("(");
        bool defaults = false;
        while (!is_op(")")) {
            if (!n->params.empty()) expect_op(",");
            if (is_op(")")) break;
            n->params.push_back(expect_name("a parameter name"));
            if (skip_op("=")) {
                n->exprs.push_back(parse_expression(true));
                defaults = true;
            } else {
                if (defaults) fail(cur().line, "a parameter without a default follows one with a default");
                n->exprs.push_back(nullptr);
            }
        }
        expect_op(")");
        const int saved_loops = loop_depth_;
        loop_depth_ = 0;
        n->bodies.push_back(block_body("macro", open_line, {"endmacro"}));
        loop_depth_ = saved_loops;
        end_tag();
        return n;
    }

    std::unique_ptr<Node> parse_filter_block(std::unique_ptr<Node> n) {
        n->kind = NodeKind::filter_block;
        const int open_line = n->line;
        advance();  // filter
        n->filter = parse_filters(nullptr, true);
        n->bodies.push_back(block_body("filter", open_line, {"endfilter"}));
        end_tag();
        return n;
    }

    std::unique_ptr<Node> parse_with(std::unique_ptr<Node> n) {
        n->kind = NodeKind::with;
        const int open_line = n->line;
        advance();  // with
        while (cur().type != Tok::block_end) {
            if (!n->targets.empty()) expect_op(",");
            Target t;
            t.names.push_back(expect_name("a variable name"));
            n->targets.push_back(std::move(t));
            expect_op("=");
            n->exprs.push_back(parse_expression(true));
        }
        n->bodies.push_back(block_body("with", open_line, {"endwith"}));
        end_tag();
        return n;
    }

    // ---- expressions ----

    bool tuple_end(const Names& extra_end) const {
        const Token& t = cur();
        if (t.type == Tok::print_end || t.type == Tok::block_end || t.type == Tok::eof) return true;
        if (t.type == Tok::op && t.text == ")") return true;
        return t.type == Tok::name && in(t.text, extra_end);
    }

    // expr or expr, expr, ... (a list value; Python's tuples).
    ExprPtr parse_tuple(bool with_condexpr, const Names& extra_end, bool parenthesized = false) {
        const int line = cur().line;
        std::vector<ExprPtr> items;
        bool is_tuple = false;
        for (;;) {
            if (!items.empty()) expect_op(",");
            if (tuple_end(extra_end)) break;
            items.push_back(parse_expression(with_condexpr));
            if (is_op(",")) is_tuple = true;
            else break;
        }
        if (!is_tuple) {
            if (!items.empty()) return std::move(items[0]);
            if (!parenthesized) fail(line, "expected an expression, got " + describe(cur()));
        }
        auto e = make(ExprKind::list, line);
        e->args = std::move(items);
        return done(std::move(e));
    }

    ExprPtr parse_expression(bool with_condexpr) {
        Depth depth(*this, cur().line);
        return with_condexpr ? parse_conditional() : parse_or();
    }

    ExprPtr parse_conditional() {
        ExprPtr then = parse_or();
        while (is_name("if")) {
            const int line = cur().line;
            advance();
            auto e = make(ExprKind::conditional, line);
            e->b = parse_or();
            if (skip_name("else")) e->c = parse_conditional();
            e->a = std::move(then);
            then = done(std::move(e));
        }
        return then;
    }

    ExprPtr binary_node(ExprKind kind, ExprPtr left, ExprPtr right, int line, std::string op = {}) {
        auto e = make(kind, line);
        e->name = std::move(op);
        e->a = std::move(left);
        e->b = std::move(right);
        return done(std::move(e));
    }

    ExprPtr parse_or() {
        ExprPtr left = parse_and();
        while (is_name("or")) {
            const int line = cur().line;
            advance();
            left = binary_node(ExprKind::logical_or, std::move(left), parse_and(), line);
        }
        return left;
    }

    ExprPtr parse_and() {
        ExprPtr left = parse_not();
        while (is_name("and")) {
            const int line = cur().line;
            advance();
            left = binary_node(ExprKind::logical_and, std::move(left), parse_not(), line);
        }
        return left;
    }

    ExprPtr parse_not() {
        if (is_name("not")) {
            const int line = cur().line;
            Depth depth(*this, line);
            advance();
            auto e = make(ExprKind::logical_not, line);
            e->a = parse_not();
            return done(std::move(e));
        }
        return parse_compare();
    }

    ExprPtr parse_compare() {
        const int line = cur().line;
        ExprPtr first = parse_math1();
        auto e = make(ExprKind::compare, line);
        for (;;) {
            if (cur().type == Tok::op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
                                          cur().text == ">" || cur().text == ">=")) {
                e->ops.push_back(cur().text);
                advance();
            } else if (is_name("in")) {
                e->ops.push_back("in");
                advance();
            } else if (is_name("not") && peek().type == Tok::name && peek().text == "in") {
                e->ops.push_back("not in");
                advance();
                advance();
            } else {
                break;
            }
            e->args.push_back(parse_math1());
        }
        if (e->ops.empty()) return first;
        e->args.insert(e->args.begin(), std::move(first));
        return done(std::move(e));
    }

    ExprPtr parse_math1() {
        ExprPtr left = parse_concat();
        while (cur().type == Tok::op && (cur().text == "+" || cur().text == "-")) {
            const int line = cur().line;
            std::string op = cur().text;
            advance();
            left = binary_node(ExprKind::binary, std::move(left), parse_concat(), line, std::move(op));
        }
        return left;
    }

    ExprPtr parse_concat() {
        const int line = cur().line;
        ExprPtr first = parse_math2();
        if (!is_op("~")) return first;
        auto e = make(ExprKind::concat, line);
        e->args.push_back(std::move(first));
        while (skip_op("~")) e->args.push_back(parse_math2());
        return done(std::move(e));
    }

    ExprPtr parse_math2() {
        ExprPtr left = parse_pow();
        while (cur().type == Tok::op && (cur().text == "*" || cur().text == "/" || cur().text == "//" || cur().text == "%")) {
            const int line = cur().line;
            std::string op = cur().text;
            advance();
            left = binary_node(ExprKind::binary, std::move(left), parse_pow(), line, std::move(op));
        }
        return left;
    }

    ExprPtr parse_pow() {
        ExprPtr left = parse_unary(true);
        while (is_op("**")) {
            const int line = cur().line;
            advance();
            left = binary_node(ExprKind::binary, std::move(left), parse_unary(true), line, "**");
        }
        return left;
    }

    ExprPtr parse_unary(bool with_filter) {
        const int line = cur().line;
        Depth depth(*this, line);
        ExprPtr node;
        if (is_op("-") || is_op("+")) {
            const bool minus = cur().text == "-";
            advance();
            auto e = make(minus ? ExprKind::negate : ExprKind::plus, line);
            e->a = parse_unary(false);
            node = done(std::move(e));
        } else {
            node = parse_primary();
        }
        node = parse_postfix(std::move(node));
        if (with_filter) node = parse_filter_expr(std::move(node));
        return node;
    }

    ExprPtr constant(Json j, int line) {
        auto e = make(ExprKind::constant, line);
        e->value = Value::data(std::move(j));
        return e;
    }

    ExprPtr parse_primary() {
        const Token& t = cur();
        const int line = t.line;
        switch (t.type) {
            case Tok::name: {
                const std::string name = t.text;
                advance();
                if (name == "true" || name == "True") return constant(Json(true), line);
                if (name == "false" || name == "False") return constant(Json(false), line);
                if (name == "none" || name == "None") return constant(Json(nullptr), line);
                auto e = make(ExprKind::name, line);
                e->name = name;
                return e;
            }
            case Tok::string: {
                std::string s = t.text;
                advance();
                while (cur().type == Tok::string) {  // adjacent literals join
                    s += cur().text;
                    advance();
                }
                return constant(Json(std::move(s)), line);
            }
            case Tok::integer: {
                std::int64_t v = 0;
                std::from_chars(t.text.data(), t.text.data() + t.text.size(), v);
                advance();
                return constant(Json(v), line);
            }
            case Tok::floating: {
                const double v = std::strtod(t.text.c_str(), nullptr);
                advance();
                return constant(Json(v), line);
            }
            case Tok::op:
                if (t.text == "(") {
                    advance();
                    ExprPtr e = parse_tuple(true, {}, true);
                    expect_op(")");
                    return e;
                }
                if (t.text == "[") {
                    advance();
                    auto e = make(ExprKind::list, line);
                    while (!is_op("]")) {
                        if (!e->args.empty()) expect_op(",");
                        if (is_op("]")) break;
                        e->args.push_back(parse_expression(true));
                    }
                    expect_op("]");
                    return done(std::move(e));
                }
                if (t.text == "{") {
                    advance();
                    auto e = make(ExprKind::dict, line);
                    while (!is_op("}")) {
                        if (!e->args.empty()) expect_op(",");
                        if (is_op("}")) break;
                        e->args.push_back(parse_expression(true));
                        expect_op(":");
                        e->args.push_back(parse_expression(true));
                    }
                    expect_op("}");
                    return done(std::move(e));
                }
                break;
            default: break;
        }
        fail(line, "unexpected " + describe(t) + " in an expression");
    }

    ExprPtr parse_postfix(ExprPtr node) {
        for (;;) {
            if (is_op(".") || is_op("[")) {
                node = parse_subscript(std::move(node));
            } else if (is_op("(")) {
                node = parse_call(std::move(node));
            } else {
                return node;
            }
        }
    }

    ExprPtr parse_filter_expr(ExprPtr node) {
        for (;;) {
            if (is_op("|")) {
                node = parse_filters(std::move(node));
            } else if (is_name("is")) {
                node = parse_test(std::move(node));
            } else if (is_op("(")) {
                node = parse_call(std::move(node));
            } else {
                return node;
            }
        }
    }

    ExprPtr parse_subscript(ExprPtr node) {
        const int line = cur().line;
        if (skip_op(".")) {
            if (cur().type == Tok::name) {
                auto e = make(ExprKind::attribute, line);
                e->name = cur().text;
                advance();
                e->a = std::move(node);
                return done(std::move(e));
            }
            if (cur().type != Tok::integer) fail(cur().line, "expected an attribute name or number after '.', got " + describe(cur()));
            auto e = make(ExprKind::item, line);
            e->b = parse_primary();
            e->a = std::move(node);
            return done(std::move(e));
        }
        expect_op("[");
        std::vector<ExprPtr> parts;
        while (!is_op("]")) {
            if (!parts.empty()) expect_op(",");
            parts.push_back(parse_subscribed());
        }
        expect_op("]");
        if (parts.empty()) fail(line, "expected a subscript inside '[]'");
        ExprPtr key;
        if (parts.size() == 1) {
            key = std::move(parts[0]);
        } else {
            key = make(ExprKind::list, line);
            key->args = std::move(parts);
            key = done(std::move(key));
        }
        if (key->kind == ExprKind::slice) {
            key->a = std::move(node);
            return done(std::move(key));
        }
        auto e = make(ExprKind::item, line);
        e->a = std::move(node);
        e->b = std::move(key);
        return done(std::move(e));
    }

    // An index, or a slice [start:stop:step] (the object is filled in by the caller).
    ExprPtr parse_subscribed() {
        const int line = cur().line;
        ExprPtr start;
        if (!is_op(":")) {
            start = parse_expression(true);
            if (!is_op(":")) return start;
        }
        advance();  // ':'
        auto e = make(ExprKind::slice, line);
        e->args.resize(3);
        e->args[0] = std::move(start);
        if (!is_op(":") && !is_op("]") && !is_op(",")) e->args[1] = parse_expression(true);
        if (skip_op(":") && !is_op("]") && !is_op(",")) e->args[2] = parse_expression(true);
        return e;
    }

    void parse_call_args(Expr& e) {
        const int line = cur().line;
        expect_op("(");
        bool need_comma = false;
        while (!is_op(")")) {
            if (need_comma) {
                expect_op(",");
                if (is_op(")")) break;
            }
            if (is_op("*") || is_op("**")) fail(line, "*args and **kwargs in calls are not supported");
            if (cur().type == Tok::name && peek().type == Tok::op && peek().text == "=") {
                std::string key = cur().text;
                advance();
                advance();
                e.kwargs.emplace_back(std::move(key), parse_expression(true));
            } else {
                if (!e.kwargs.empty()) fail(cur().line, "a positional argument follows a keyword argument");
                e.args.push_back(parse_expression(true));
            }
            need_comma = true;
        }
        expect_op(")");
    }

    ExprPtr parse_call(ExprPtr node) {
        auto e = make(ExprKind::call, cur().line);
        parse_call_args(*e);
        e->a = std::move(node);
        return done(std::move(e));
    }

    std::string dotted_name(const char* what) {
        std::string name = expect_name(what);
        while (skip_op(".")) name += "." + expect_name(what);
        return name;
    }

    // | name(args) | name ...; `inline_first` parses the first filter without a leading '|'.
    ExprPtr parse_filters(ExprPtr node, bool inline_first = false) {
        while (is_op("|") || inline_first) {
            if (!inline_first) advance();
            inline_first = false;
            const int line = cur().line;
            auto e = make(ExprKind::filter, line);
            e->name = dotted_name("a filter name");
            if (is_op("(")) parse_call_args(*e);
            e->a = std::move(node);
            node = done(std::move(e));
        }
        return node;
    }

    ExprPtr parse_test(ExprPtr node) {
        const int line = cur().line;
        advance();  // is
        auto e = make(ExprKind::test, line);
        e->negated = skip_name("not");
        e->name = dotted_name("a test name");
        if (is_op("(")) {
            parse_call_args(*e);
        } else if ((cur().type == Tok::name && cur().text != "else" && cur().text != "or" && cur().text != "and") ||
                   cur().type == Tok::string || cur().type == Tok::integer || cur().type == Tok::floating || is_op("[") ||
                   is_op("{")) {
            if (is_name("is")) fail(cur().line, "tests cannot be chained with 'is'");
            e->args.push_back(parse_postfix(parse_primary()));
        }
        e->a = std::move(node);
        return done(std::move(e));
    }

    std::vector<Token> t_;
    std::size_t i_ = 0;
    std::string where_;
    const Limits& limits_;
    int depth_ = 0;
    int loop_depth_ = 0;
};

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Interpreter.

struct Frame {
    std::shared_ptr<Frame> parent;
    std::vector<std::pair<std::string, Value>> vars;

    Value* find_local(std::string_view name) {
        for (auto& [k, v] : vars)
            if (k == name) return &v;
        return nullptr;
    }
    void set(const std::string& name, Value v) {
        if (Value* existing = find_local(name)) *existing = std::move(v);
        else vars.emplace_back(name, std::move(v));
    }
};

class Interpreter {
public:
    Interpreter(const Body& program, std::string name, const Limits& limits) : program_(program), name_(std::move(name)), limits_(limits) {}

    std::string render(const Json& variables) {
        if (!variables.is_object() && !variables.is_null()) fail("template variables must be a JSON object");
        auto root = std::make_shared<Frame>();
        auto vars = std::make_shared<const Json>(variables.is_null() ? Json::object() : variables);
        for (const auto& [k, v] : vars->items()) root->set(k, Value::view(vars, &v));
        frame_ = root;
        std::string out;
        out_ = &out;
        exec(program_);
        return out;
    }

    // ---- services for filters, tests and functions ----

    std::string where() const { return fmt::format("{}, line {}", name_, line_); }
    [[noreturn]] void fail(const std::string& what) const { throw Error(where() + ": " + what); }
    [[noreturn]] void raise_undefined(const Value& v) const { fail(v.hint().empty() ? "undefined value used" : v.hint()); }

    const Limits& limits() const { return limits_; }

    void step(std::uint64_t n = 1) {
        steps_ += n;
        if (steps_ > limits_.max_steps)
            fail(fmt::format("the template ran more than {} loop iterations and calls (the limit)", limits_.max_steps));
    }

    void check_size(std::size_t bytes) const {
        if (bytes > limits_.max_output_bytes)
            fail(fmt::format("the template built more than {} bytes of text (the limit)", limits_.max_output_bytes));
    }
    void check_items(std::size_t items) const {
        if (items > limits_.max_list_items)
            fail(fmt::format("the template built a list of more than {} items (the limit)", limits_.max_list_items));
    }

    static std::string type_name(const Value& v) {
        switch (v.kind()) {
            case Value::Kind::undefined: return "Undefined";
            case Value::Kind::function: return "function";
            case Value::Kind::object: return v.obj().type;
            case Value::Kind::data: break;
        }
        return json_type_name(v.json());
    }
    static std::string json_type_name(const Json& j) {
        switch (j.type()) {
            case Json::value_t::null: return "NoneType";
            case Json::value_t::boolean: return "bool";
            case Json::value_t::number_integer:
            case Json::value_t::number_unsigned: return "int";
            case Json::value_t::number_float: return "float";
            case Json::value_t::string: return "str";
            case Json::value_t::array: return "list";
            case Json::value_t::object: return "dict";
            default: return "Undefined";
        }
    }
    // How Jinja2 names an object in "has no attribute" messages.
    static std::string object_description(const Value& v) {
        if (v.is_none()) return "None";
        return type_name(v) + " object";
    }

    static bool truthy(const Value& v) {
        switch (v.kind()) {
            case Value::Kind::undefined: return false;
            case Value::Kind::function:
            case Value::Kind::object: return true;
            case Value::Kind::data: break;
        }
        const Json& j = v.json();
        switch (j.type()) {
            case Json::value_t::null: return false;
            case Json::value_t::boolean: return j.get<bool>();
            case Json::value_t::number_integer: return j.get<std::int64_t>() != 0;
            case Json::value_t::number_unsigned: return j.get<std::uint64_t>() != 0;
            case Json::value_t::number_float: return j.get<double>() != 0;
            case Json::value_t::string: return !j.get_ref<const std::string&>().empty();
            case Json::value_t::array:
            case Json::value_t::object: return !j.empty();
            default: return false;
        }
    }

    // Python's str().
    std::string to_str(const Value& v) const {
        switch (v.kind()) {
            case Value::Kind::undefined: return "";
            case Value::Kind::function: return "<function " + v.func().name + ">";
            case Value::Kind::object: {
                if (v.obj().loop_items) return fmt::format("<LoopContext {}/{}>", v.obj().loop_index + 1, v.obj().loop_items->size());
                std::string s = "<" + v.obj().type + " {";
                bool first = true;
                for (const auto& [k, a] : v.obj().attributes) {
                    if (a.is_function()) continue;
                    s += (first ? "" : ", ") + detail::repr_string(k) + ": " + repr(a);
                    first = false;
                }
                return s + "}>";
            }
            case Value::Kind::data: break;
        }
        return json_str(v.json());
    }
    static std::string json_str(const Json& j) {
        if (j.is_string()) return j.get<std::string>();
        return json_repr(j);
    }
    std::string repr(const Value& v) const {
        if (v.is_data()) return json_repr(v.json());
        if (v.is_undefined()) return "Undefined";
        return to_str(v);
    }
    // Python's repr() of a JSON value (dicts and lists as Python prints them).
    static std::string json_repr(const Json& j) {
        std::string out;
        json_repr_into(out, j);
        return out;
    }
    static void json_repr_into(std::string& out, const Json& j) {
        switch (j.type()) {
            case Json::value_t::null: out += "None"; return;
            case Json::value_t::boolean: out += j.get<bool>() ? "True" : "False"; return;
            case Json::value_t::number_integer: out += std::to_string(j.get<std::int64_t>()); return;
            case Json::value_t::number_unsigned: out += std::to_string(j.get<std::uint64_t>()); return;
            case Json::value_t::number_float: out += detail::format_float(j.get<double>()); return;
            case Json::value_t::string: out += detail::repr_string(j.get_ref<const std::string&>()); return;
            case Json::value_t::array: {
                out += '[';
                bool first = true;
                for (const auto& x : j) {
                    if (!first) out += ", ";
                    first = false;
                    json_repr_into(out, x);
                }
                out += ']';
                return;
            }
            case Json::value_t::object: {
                out += '{';
                bool first = true;
                for (const auto& [k, x] : j.items()) {
                    if (!first) out += ", ";
                    first = false;
                    out += detail::repr_string(k) + ": ";
                    json_repr_into(out, x);
                }
                out += '}';
                return;
            }
            default: out += "Undefined"; return;
        }
    }

    // Python's json.dumps(value, ensure_ascii, indent, separators, sort_keys).
    std::string to_json_text(const Value& v, bool ensure_ascii, std::optional<std::string> indent, std::string item_sep,
                             std::string key_sep, bool sort_keys) const {
        if (!v.is_data()) fail("Object of type " + type_name(v) + " is not JSON serializable");
        std::string out;
        dump(out, v.json(), ensure_ascii, indent, item_sep, key_sep, sort_keys, 0);
        return out;
    }
    void dump(std::string& out, const Json& j, bool ensure_ascii, const std::optional<std::string>& indent, const std::string& item_sep,
              const std::string& key_sep, bool sort_keys, int level) const {
        check_size(out.size());
        const auto newline = [&](int lvl) {
            out += '\n';
            for (int k = 0; k < lvl; ++k) out += *indent;
        };
        switch (j.type()) {
            case Json::value_t::null: out += "null"; return;
            case Json::value_t::boolean: out += j.get<bool>() ? "true" : "false"; return;
            case Json::value_t::number_integer: out += std::to_string(j.get<std::int64_t>()); return;
            case Json::value_t::number_unsigned: out += std::to_string(j.get<std::uint64_t>()); return;
            case Json::value_t::number_float: {
                const double d = j.get<double>();
                if (std::isnan(d)) out += "NaN";
                else if (std::isinf(d)) out += d > 0 ? "Infinity" : "-Infinity";
                else out += detail::format_float(d);
                return;
            }
            case Json::value_t::string: detail::dump_json_string(out, j.get_ref<const std::string&>(), ensure_ascii); return;
            case Json::value_t::array: {
                if (j.empty()) {
                    out += "[]";
                    return;
                }
                out += '[';
                bool first = true;
                for (const auto& x : j) {
                    if (!first) out += item_sep;
                    if (indent) newline(level + 1);
                    first = false;
                    dump(out, x, ensure_ascii, indent, item_sep, key_sep, sort_keys, level + 1);
                }
                if (indent) newline(level);
                out += ']';
                return;
            }
            case Json::value_t::object: {
                if (j.empty()) {
                    out += "{}";
                    return;
                }
                std::vector<std::pair<const std::string*, const Json*>> members;
                for (const auto& [k, x] : j.items()) members.emplace_back(&k, &x);
                if (sort_keys)
                    std::stable_sort(members.begin(), members.end(), [](const auto& l, const auto& r) { return *l.first < *r.first; });
                out += '{';
                bool first = true;
                for (const auto& [k, x] : members) {
                    if (!first) out += item_sep;
                    if (indent) newline(level + 1);
                    first = false;
                    detail::dump_json_string(out, *k, ensure_ascii);
                    out += key_sep;
                    dump(out, *x, ensure_ascii, indent, item_sep, key_sep, sort_keys, level + 1);
                }
                if (indent) newline(level);
                out += '}';
                return;
            }
            default: fail("Object of type Undefined is not JSON serializable");
        }
    }

    // A value to store in a list or dict (an undefined one is kept as a marker).
    Json to_storable(const Value& v) const {
        switch (v.kind()) {
            case Value::Kind::data: return v.json();
            case Value::Kind::undefined: return Json(Json::value_t::discarded);
            default: fail("a " + type_name(v) + " cannot be stored in a list or dict here");
        }
    }

    // The items a for loop (or list(), join, ...) sees.
    std::vector<Value> iterate(const Value& v) const {
        std::vector<Value> items;
        switch (v.kind()) {
            case Value::Kind::undefined: return items;
            case Value::Kind::data: break;
            default: fail("'" + type_name(v) + "' object is not iterable");
        }
        const Json& j = v.json();
        if (j.is_array()) {
            items.reserve(j.size());
            for (std::size_t i = 0; i < j.size(); ++i) items.push_back(v.element(i));
        } else if (j.is_object()) {
            for (const auto& [k, x] : j.items()) {
                (void)x;
                items.push_back(Value::string(k));
            }
        } else if (j.is_string()) {
            const std::string& s = j.get_ref<const std::string&>();
            check_items(detail::code_point_count(s));
            detail::for_each_code_point(s, [&](char32_t, std::size_t i, std::size_t n) { items.push_back(Value::string(s.substr(i, n))); });
        } else {
            fail("'" + json_type_name(j) + "' object is not iterable");
        }
        return items;
    }

    Value list_value(const std::vector<Value>& items) const {
        check_items(items.size());
        Json arr = Json::array();
        for (const Value& x : items) arr.push_back(to_storable(x));
        return Value::data(std::move(arr));
    }

    std::size_t length(const Value& v) const {
        if (v.is_undefined()) return 0;
        if (v.is_data()) {
            const Json& j = v.json();
            if (j.is_string()) return detail::code_point_count(j.get_ref<const std::string&>());
            if (j.is_array() || j.is_object()) return j.size();
        }
        fail("object of type '" + type_name(v) + "' has no len()");
    }

    // Python ==.
    static bool equal(const Value& a, const Value& b) {
        if (a.kind() != b.kind()) return false;
        switch (a.kind()) {
            case Value::Kind::undefined: return true;
            case Value::Kind::function: return &a.func() == &b.func();
            case Value::Kind::object: return a.identity() == b.identity();
            case Value::Kind::data: break;
        }
        return json_equal(a.json(), b.json());
    }
    static bool json_equal(const Json& a, const Json& b) {
        const auto na = detail::number_of(a), nb = detail::number_of(b);
        if (na || nb) {
            if (!na || !nb) return false;
            if (!na->is_float && !nb->is_float) return na->i == nb->i;
            return na->as_double() == nb->as_double();
        }
        if (a.type() != b.type()) return false;
        switch (a.type()) {
            case Json::value_t::null: return true;
            case Json::value_t::string: return a.get_ref<const std::string&>() == b.get_ref<const std::string&>();
            case Json::value_t::array:
                if (a.size() != b.size()) return false;
                for (std::size_t i = 0; i < a.size(); ++i)
                    if (!json_equal(a[i], b[i])) return false;
                return true;
            case Json::value_t::object:
                if (a.size() != b.size()) return false;
                for (const auto& [k, x] : a.items()) {
                    const auto it = b.find(k);
                    if (it == b.end() || !json_equal(x, *it)) return false;
                }
                return true;
            case Json::value_t::discarded: return true;
            default: return false;
        }
    }

    // Python <, as -1/0/1; types that do not order raise.
    int order(const Value& a, const Value& b, std::string_view op) const {
        if (a.is_undefined()) raise_undefined(a);
        if (b.is_undefined()) raise_undefined(b);
        if (a.is_data() && b.is_data()) {
            if (auto c = json_order(a.json(), b.json())) return *c;
        }
        fail(fmt::format("'{}' not supported between instances of '{}' and '{}'", op, type_name(a), type_name(b)));
    }
    static std::optional<int> json_order(const Json& a, const Json& b) {
        const auto na = detail::number_of(a), nb = detail::number_of(b);
        if (na && nb) {
            if (!na->is_float && !nb->is_float) return na->i < nb->i ? -1 : na->i > nb->i ? 1 : 0;
            const double x = na->as_double(), y = nb->as_double();
            return x < y ? -1 : x > y ? 1 : 0;
        }
        if (a.is_string() && b.is_string()) {
            const int c = a.get_ref<const std::string&>().compare(b.get_ref<const std::string&>());
            return c < 0 ? -1 : c > 0 ? 1 : 0;
        }
        if (a.is_array() && b.is_array()) {
            for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
                if (json_equal(a[i], b[i])) continue;
                return json_order(a[i], b[i]);
            }
            return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
        }
        return std::nullopt;
    }

    bool contains(const Value& container, const Value& item) const {
        if (container.is_undefined()) return false;
        if (!container.is_data()) fail("argument of type '" + type_name(container) + "' is not iterable");
        const Json& c = container.json();
        if (c.is_string()) {
            if (!item.is_string()) fail("'in <string>' requires string as left operand, not " + type_name(item));
            return c.get_ref<const std::string&>().find(item.str()) != std::string::npos;
        }
        if (c.is_array()) {
            for (std::size_t i = 0; i < c.size(); ++i)
                if (equal(container.element(i), item)) return true;
            return false;
        }
        if (c.is_object()) {
            if (item.is_string()) return c.contains(item.str());
            if (item.is_array() || item.is_mapping()) fail("unhashable type: '" + type_name(item) + "'");
            return false;
        }
        fail("argument of type '" + json_type_name(c) + "' is not iterable");
    }

    std::optional<detail::Number> number(const Value& v) const {
        if (v.is_data()) return detail::number_of(v.json());
        return std::nullopt;
    }

    // Attribute access (x.name): methods first, as Python's getattr, then mapping keys.
    Value get_attr(const Value& obj, const std::string& name) const;
    // Subscription (x[key]): mapping keys and indexes first, then attributes.
    Value get_item(const Value& obj, const Value& key) const;
    Value loop_attribute(const Object& loop, const std::string& name) const;
    Value call(const Value& callee, CallArgs& args);
    Value apply_filter(const std::string& name, const Value& input, CallArgs& args);
    bool apply_test(const std::string& name, const Value& input, CallArgs& args);
    Value lookup(const std::string& name) const;

    // Renders `body` in a new scope whose parent is `parent`, returning the text (macros, caller blocks).
    std::string capture(const Body& body, std::shared_ptr<Frame> scope) {
        std::string buffer;
        std::string* saved_out = out_;
        auto saved_frame = frame_;
        out_ = &buffer;
        frame_ = std::move(scope);
        try {
            exec(body);
        } catch (...) {
            out_ = saved_out;
            frame_ = std::move(saved_frame);
            throw;
        }
        out_ = saved_out;
        frame_ = std::move(saved_frame);
        return buffer;
    }

    std::shared_ptr<Frame> child_frame() const {
        auto f = std::make_shared<Frame>();
        f->parent = frame_;
        return f;
    }

    Value call_macro(const Node& macro, const std::shared_ptr<Frame>& defined_in, CallArgs& args);
    Value eval(const Expr& e);

private:
    enum class Flow { normal, loop_break, loop_continue };

    struct DepthGuard {
        Interpreter& in;
        explicit DepthGuard(Interpreter& i) : in(i) {
            if (++in.depth_ > in.limits_.max_eval_depth)
                in.fail(fmt::format("the template recursed more than {} levels deep (the limit)", in.limits_.max_eval_depth));
        }
        ~DepthGuard() { --in.depth_; }
    };

    void write(std::string_view s) {
        check_size(out_->size() + s.size());
        out_->append(s);
    }

    Flow exec(const Body& body) {
        for (const auto& n : body) {
            const Flow f = exec(*n);
            if (f != Flow::normal) return f;
        }
        return Flow::normal;
    }

    Flow exec(const Node& n);
    Flow exec_for(const Node& n);
    void assign(const Target& t, const Value& v);
    Value eval_binary(const std::string& op, const Value& a, const Value& b);
    std::string printf_format(const std::string& format, const std::vector<Value>& positional, const Value* mapping) const;
    Value eval_slice(const Expr& e);
    Value eval_call(const Expr& e);
    CallArgs eval_args(const Expr& e) {
        CallArgs args;
        args.positional.reserve(e.args.size());
        for (const auto& x : e.args) args.positional.push_back(eval(*x));
        for (const auto& [k, x] : e.kwargs) args.keyword.emplace_back(k, eval(*x));
        return args;
    }

    const Body& program_;
    std::string name_;
    const Limits& limits_;
    std::shared_ptr<Frame> frame_;
    std::string* out_ = nullptr;
    int line_ = 0;
    int depth_ = 0;
    int call_depth_ = 0;
    std::uint64_t steps_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Argument binding for filters, tests, functions and methods.
namespace detail {

class Params {
public:
    Params(const Interpreter& in, std::string what, CallArgs& args, std::initializer_list<const char*> names)
        : names_(names), given_(names.size(), nullptr) {
        if (args.positional.size() > names_.size())
            in.fail(fmt::format("{} takes at most {} argument(s), {} given", what, names_.size(), args.positional.size()));
        for (std::size_t i = 0; i < args.positional.size(); ++i) given_[i] = &args.positional[i];
        for (auto& [k, v] : args.keyword) {
            const std::string& key = k;  // (a structured binding cannot be captured before C++20 compilers caught up)
            const auto it = std::find_if(names_.begin(), names_.end(), [&](const char* n) { return key == n; });
            if (it == names_.end()) in.fail(fmt::format("{} got an unexpected keyword argument '{}'", what, k));
            const auto i = std::size_t(it - names_.begin());
            if (given_[i]) in.fail(fmt::format("{} got multiple values for argument '{}'", what, k));
            given_[i] = &v;
        }
    }
    const Value* get(std::size_t i) const { return given_[i]; }
    const Value& get_or(std::size_t i, const Value& fallback) const { return given_[i] ? *given_[i] : fallback; }

private:
    std::vector<const char*> names_;
    std::vector<const Value*> given_;
};

inline bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// How many values a printf-style format consumes (each field but %%).
inline std::size_t printf_argument_count(std::string_view f) {
    std::size_t n = 0;
    for (std::size_t i = 0; i + 1 < f.size(); ++i) {
        if (f[i] != '%') continue;
        if (f[i + 1] == '%') {
            ++i;
            continue;
        }
        ++n;
    }
    return n;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Interpreter: statements.

inline Interpreter::Flow Interpreter::exec(const Node& n) {
    DepthGuard guard(*this);
    line_ = n.line;
    switch (n.kind) {
        case NodeKind::text: write(n.text); return Flow::normal;
        case NodeKind::output:
            for (const auto& e : n.exprs) {
                const Value v = eval(*e);
                line_ = n.line;
                write(to_str(v));
            }
            return Flow::normal;
        case NodeKind::if_chain:
            for (std::size_t i = 0; i < n.exprs.size(); ++i)
                if (truthy(eval(*n.exprs[i]))) return exec(n.bodies[i]);
            if (n.has_else) return exec(n.bodies.back());
            return Flow::normal;
        case NodeKind::for_loop: return exec_for(n);
        case NodeKind::set: {
            const Value v = eval(*n.exprs[0]);
            line_ = n.line;
            assign(n.targets[0], v);
            return Flow::normal;
        }
        case NodeKind::set_block: {
            Value v = Value::string(capture(n.bodies[0], child_frame()));
            if (n.filter) {
                // The innermost filter's input is the captured text.
                std::vector<const Expr*> chain;
                for (const Expr* f = n.filter.get(); f; f = f->a.get()) chain.push_back(f);
                for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
                    CallArgs args = eval_args(**it);
                    v = apply_filter((*it)->name, v, args);
                }
            }
            line_ = n.line;
            assign(n.targets[0], v);
            return Flow::normal;
        }
        case NodeKind::macro: {
            // The macro sees the scope it was defined in (held weakly: the scope holds the macro).
            const Node* macro = &n;
            std::weak_ptr<Frame> defined_in = frame_;
            frame_->set(n.text, Value::function(n.text, [macro, defined_in](Interpreter& in, CallArgs& args) {
                            const auto scope = defined_in.lock();
                            if (!scope) in.fail("macro '" + macro->text + "' is called after the scope it was defined in ended");
                            return in.call_macro(*macro, scope, args);
                        }));
            return Flow::normal;
        }
        case NodeKind::filter_block: {
            Value v = Value::string(capture(n.bodies[0], child_frame()));
            std::vector<const Expr*> chain;
            for (const Expr* f = n.filter.get(); f; f = f->a.get()) chain.push_back(f);
            for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
                CallArgs args = eval_args(**it);
                v = apply_filter((*it)->name, v, args);
            }
            write(to_str(v));
            return Flow::normal;
        }
        case NodeKind::with: {
            std::vector<Value> values;
            for (const auto& e : n.exprs) values.push_back(eval(*e));
            auto scope = child_frame();
            for (std::size_t i = 0; i < values.size(); ++i) scope->set(n.targets[i].names[0], values[i]);
            auto saved = frame_;
            frame_ = scope;
            Flow f;
            try {
                f = exec(n.bodies[0]);
            } catch (...) {
                frame_ = saved;
                throw;
            }
            frame_ = saved;
            return f;
        }
        case NodeKind::scope: write(capture(n.bodies[0], child_frame())); return Flow::normal;
        case NodeKind::loop_break: return Flow::loop_break;
        case NodeKind::loop_continue: return Flow::loop_continue;
    }
    return Flow::normal;
}

inline void Interpreter::assign(const Target& t, const Value& v) {
    if (!t.attribute.empty()) {
        const Value ns = lookup(t.names[0]);
        if (!ns.is_object() || !ns.obj().assignable) fail("cannot assign attribute on non-namespace object");
        if (detail::starts_with(t.attribute, "_"))
            fail("chat templates cannot store underscore-prefixed attributes on a namespace, but got '" + t.attribute + "'");
        ns.obj().set(t.attribute, v);
        return;
    }
    if (!t.unpack) {
        frame_->set(t.names[0], v);
        return;
    }
    const std::vector<Value> items = iterate(v);
    if (items.size() != t.names.size())
        fail(items.size() > t.names.size() ? fmt::format("too many values to unpack (expected {})", t.names.size())
                                           : fmt::format("not enough values to unpack (expected {}, got {})", t.names.size(), items.size()));
    for (std::size_t i = 0; i < items.size(); ++i) frame_->set(t.names[i], items[i]);
}

inline Interpreter::Flow Interpreter::exec_for(const Node& n) {
    const Value seq = eval(*n.exprs[0]);
    line_ = n.line;
    std::vector<Value> items = iterate(seq);
    const Target& target = n.targets[0];
    auto saved = frame_;
    const auto restore = [&] { frame_ = saved; };
    try {
        if (n.exprs.size() > 1) {  // {% for x in xs if cond %}: the loop sees only the items that pass
            std::vector<Value> kept;
            for (const Value& item : items) {
                step();
                frame_ = std::make_shared<Frame>();
                frame_->parent = saved;
                assign(target, item);
                if (truthy(eval(*n.exprs[1]))) kept.push_back(item);
                frame_ = saved;
            }
            items = std::move(kept);
        }
        if (items.empty()) {
            if (n.has_else) {
                frame_ = std::make_shared<Frame>();
                frame_->parent = saved;
                exec(n.bodies[1]);
            }
            restore();
            return Flow::normal;
        }
        const auto shared_items = std::make_shared<const std::vector<Value>>(std::move(items));
        for (std::size_t i = 0; i < shared_items->size(); ++i) {
            step();
            line_ = n.line;
            frame_ = std::make_shared<Frame>();
            frame_->parent = saved;
            frame_->vars.reserve(target.names.size() + 1);
            assign(target, (*shared_items)[i]);
            auto loop = std::make_shared<Object>();
            loop->type = "LoopContext";
            loop->loop_items = shared_items;
            loop->loop_index = i;
            frame_->set("loop", Value::object(std::move(loop)));
            const Flow f = exec(n.bodies[0]);
            if (f == Flow::loop_break) break;
        }
    } catch (...) {
        restore();
        throw;
    }
    restore();
    return Flow::normal;
}

inline Value Interpreter::call_macro(const Node& macro, const std::shared_ptr<Frame>& defined_in, CallArgs& args) {
    if (call_depth_ >= limits_.max_call_depth)
        fail(fmt::format("macro '{}' recursed more than {} levels deep (the limit)", macro.text, limits_.max_call_depth));
    step();
    const std::size_t n_params = macro.params.size();
    if (args.positional.size() > n_params)
        fail(fmt::format("macro '{}' takes not more than {} argument(s)", macro.text, n_params));
    auto scope = std::make_shared<Frame>();
    scope->parent = defined_in;
    std::vector<const Value*> given(n_params, nullptr);
    for (std::size_t i = 0; i < args.positional.size(); ++i) given[i] = &args.positional[i];
    for (auto& [k, v] : args.keyword) {
        const auto it = std::find(macro.params.begin(), macro.params.end(), k);
        if (it == macro.params.end()) fail(fmt::format("macro '{}' takes no keyword argument '{}'", macro.text, k));
        const auto i = std::size_t(it - macro.params.begin());
        if (given[i]) fail(fmt::format("macro '{}' got multiple values for argument '{}'", macro.text, k));
        given[i] = &v;
    }
    ++call_depth_;
    auto saved = frame_;
    std::string text;
    try {
        frame_ = scope;
        for (std::size_t i = 0; i < n_params; ++i) {
            if (given[i]) scope->set(macro.params[i], *given[i]);
            else if (macro.exprs[i]) scope->set(macro.params[i], eval(*macro.exprs[i]));
            else scope->set(macro.params[i], Value::undefined(fmt::format("parameter '{}' was not provided", macro.params[i])));
        }
        frame_ = saved;
        text = capture(macro.bodies[0], scope);
    } catch (...) {
        frame_ = saved;
        --call_depth_;
        throw;
    }
    --call_depth_;
    return Value::string(std::move(text));
}

// ---------------------------------------------------------------------------------------------
// Interpreter: expressions.

inline Value Interpreter::eval(const Expr& e) {
    DepthGuard guard(*this);
    line_ = e.line;
    switch (e.kind) {
        case ExprKind::constant: return e.value;
        case ExprKind::name: return lookup(e.name);
        case ExprKind::list: {
            Json arr = Json::array();
            for (const auto& x : e.args) arr.push_back(to_storable(eval(*x)));
            return Value::data(std::move(arr));
        }
        case ExprKind::dict: {
            Json obj = Json::object();
            for (std::size_t i = 0; i + 1 < e.args.size(); i += 2) {
                const Value key = eval(*e.args[i]);
                Value value = eval(*e.args[i + 1]);
                if (!key.is_string()) {
                    line_ = e.line;
                    fail("dict keys must be strings here, got " + type_name(key));
                }
                obj[key.str()] = to_storable(value);
            }
            return Value::data(std::move(obj));
        }
        case ExprKind::attribute: {
            const Value obj = eval(*e.a);
            line_ = e.line;
            return get_attr(obj, e.name);
        }
        case ExprKind::item: {
            const Value obj = eval(*e.a);
            const Value key = eval(*e.b);
            line_ = e.line;
            return get_item(obj, key);
        }
        case ExprKind::slice: return eval_slice(e);
        case ExprKind::call: return eval_call(e);
        case ExprKind::filter: {
            const Value input = eval(*e.a);
            CallArgs args = eval_args(e);
            line_ = e.line;
            return apply_filter(e.name, input, args);
        }
        case ExprKind::test: {
            const Value input = eval(*e.a);
            CallArgs args = eval_args(e);
            line_ = e.line;
            return Value::boolean(apply_test(e.name, input, args) != e.negated);
        }
        case ExprKind::logical_not: return Value::boolean(!truthy(eval(*e.a)));
        case ExprKind::negate:
        case ExprKind::plus: {
            const Value v = eval(*e.a);
            line_ = e.line;
            if (v.is_undefined()) raise_undefined(v);
            const auto n = number(v);
            if (!n) fail(fmt::format("bad operand type for unary {}: '{}'", e.kind == ExprKind::negate ? '-' : '+', type_name(v)));
            if (e.kind == ExprKind::plus) return Value::data(detail::json_of(*n));
            if (n->is_float) return Value::data(Json(-n->f));
            if (n->i == std::numeric_limits<std::int64_t>::min()) fail("integer overflow");
            return Value::data(Json(-n->i));
        }
        case ExprKind::binary: {
            const Value a = eval(*e.a);
            const Value b = eval(*e.b);
            line_ = e.line;
            return eval_binary(e.name, a, b);
        }
        case ExprKind::concat: {
            std::string s;
            for (const auto& x : e.args) {
                s += to_str(eval(*x));
                check_size(s.size());
            }
            return Value::string(std::move(s));
        }
        case ExprKind::compare: {
            Value left = eval(*e.args[0]);
            for (std::size_t i = 0; i < e.ops.size(); ++i) {
                Value right = eval(*e.args[i + 1]);
                line_ = e.line;
                const std::string& op = e.ops[i];
                bool r;
                if (op == "==") r = equal(left, right);
                else if (op == "!=") r = !equal(left, right);
                else if (op == "in") r = contains(right, left);
                else if (op == "not in") r = !contains(right, left);
                else {
                    const int c = order(left, right, op);
                    r = op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0;
                }
                if (!r) return Value::boolean(false);
                left = std::move(right);
            }
            return Value::boolean(true);
        }
        case ExprKind::logical_and: {
            Value a = eval(*e.a);
            if (!truthy(a)) return a;
            return eval(*e.b);
        }
        case ExprKind::logical_or: {
            Value a = eval(*e.a);
            if (truthy(a)) return a;
            return eval(*e.b);
        }
        case ExprKind::conditional: {
            if (truthy(eval(*e.b))) return eval(*e.a);
            if (e.c) return eval(*e.c);
            return Value::undefined(fmt::format("the inline if-expression on line {} evaluated to false and no else section was defined.", e.line));
        }
    }
    return Value();
}

inline Value Interpreter::eval_call(const Expr& e) {
    const Value callee = eval(*e.a);
    CallArgs args = eval_args(e);
    line_ = e.line;
    return call(callee, args);
}

inline Value Interpreter::call(const Value& callee, CallArgs& args) {
    if (callee.is_undefined()) raise_undefined(callee);
    if (!callee.is_function()) fail("'" + type_name(callee) + "' object is not callable");
    return callee.func().call(*this, args);
}

inline Value Interpreter::eval_slice(const Expr& e) {
    const Value obj = eval(*e.a);
    std::optional<std::int64_t> bound[3];
    for (int k = 0; k < 3; ++k) {
        if (!e.args[std::size_t(k)]) continue;
        const Value v = eval(*e.args[std::size_t(k)]);
        line_ = e.line;
        if (v.is_none()) continue;
        if (v.is_undefined()) raise_undefined(v);
        const auto n = number(v);
        if (!n || n->is_float) return Value::undefined("slice indices must be integers or None");
        bound[k] = n->i;
    }
    line_ = e.line;
    if (obj.is_undefined()) raise_undefined(obj);
    if (!obj.is_data() || !(obj.json().is_array() || obj.json().is_string()))
        return Value::undefined(object_description(obj) + " cannot be sliced");
    const std::int64_t step = bound[2].value_or(1);
    if (step == 0) fail("slice step cannot be zero");
    const bool is_string = obj.json().is_string();
    std::vector<std::size_t> cps;
    if (is_string) cps = detail::code_point_offsets(obj.str());
    const auto n = std::int64_t(is_string ? cps.size() - 1 : obj.json().size());
    const auto adjust = [&](std::optional<std::int64_t> x, bool is_start) -> std::int64_t {
        if (!x) return step < 0 ? (is_start ? n - 1 : -1) : (is_start ? 0 : n);
        std::int64_t v = *x;
        if (v < 0) {
            v += n;
            if (v < 0) v = step < 0 ? -1 : 0;
        } else if (v >= n) {
            v = step < 0 ? n - 1 : n;
        }
        return v;
    };
    const std::int64_t start = adjust(bound[0], true), stop = adjust(bound[1], false);
    std::vector<std::int64_t> picks;
    if (step > 0)
        for (std::int64_t i = start; i < stop; i += step) picks.push_back(i);
    else
        for (std::int64_t i = start; i > stop; i += step) picks.push_back(i);
    if (is_string) {
        const std::string& s = obj.str();
        std::string out;
        for (std::int64_t i : picks) out.append(s, cps[std::size_t(i)], cps[std::size_t(i) + 1] - cps[std::size_t(i)]);
        return Value::string(std::move(out));
    }
    Json arr = Json::array();
    for (std::int64_t i : picks) arr.push_back(obj.json()[std::size_t(i)]);
    return Value::data(std::move(arr));
}

inline Value Interpreter::eval_binary(const std::string& op, const Value& a, const Value& b) {
    if (a.is_undefined()) raise_undefined(a);
    if (b.is_undefined()) raise_undefined(b);
    const auto na = number(a), nb = number(b);
    const auto unsupported = [&]() -> Value {
        fail(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a), type_name(b)));
    };
    const auto repeat = [&](const Value& seq, std::int64_t times) -> Value {
        times = std::max<std::int64_t>(times, 0);
        if (seq.is_string()) {
            check_size(seq.str().size() * std::size_t(times));
            std::string out;
            for (std::int64_t k = 0; k < times; ++k) out += seq.str();
            return Value::string(std::move(out));
        }
        check_items(seq.json().size() * std::size_t(times));
        Json arr = Json::array();
        for (std::int64_t k = 0; k < times; ++k)
            for (const auto& x : seq.json()) arr.push_back(x);
        return Value::data(std::move(arr));
    };
    if (na && nb) {
        const bool floats = na->is_float || nb->is_float;
        const double x = na->as_double(), y = nb->as_double();
        std::int64_t r = 0;
        if (op == "+") {
            if (floats) return Value::data(Json(x + y));
            if (__builtin_add_overflow(na->i, nb->i, &r)) fail("integer overflow");
            return Value::data(Json(r));
        }
        if (op == "-") {
            if (floats) return Value::data(Json(x - y));
            if (__builtin_sub_overflow(na->i, nb->i, &r)) fail("integer overflow");
            return Value::data(Json(r));
        }
        if (op == "*") {
            if (floats) return Value::data(Json(x * y));
            if (__builtin_mul_overflow(na->i, nb->i, &r)) fail("integer overflow");
            return Value::data(Json(r));
        }
        if (op == "/") {
            if (y == 0) fail("division by zero");
            return Value::data(Json(x / y));
        }
        if (op == "//" || op == "%") {
            if (floats) {
                if (y == 0) fail(op == "//" ? "float floor division by zero" : "float modulo");
                double m = std::fmod(x, y);
                if (m != 0 && ((m < 0) != (y < 0))) m += y;
                if (op == "%") return Value::data(Json(m));
                return Value::data(Json(std::floor((x - m) / y + 0.5)));
            }
            if (nb->i == 0) fail("integer division or modulo by zero");
            if (na->i == std::numeric_limits<std::int64_t>::min() && nb->i == -1) fail("integer overflow");
            std::int64_t q = na->i / nb->i, m = na->i % nb->i;
            if (m != 0 && ((m < 0) != (nb->i < 0))) {
                m += nb->i;
                --q;
            }
            return Value::data(Json(op == "//" ? q : m));
        }
        if (op == "**") {
            if (!floats && nb->i >= 0) {
                std::int64_t result = 1, base = na->i, e = nb->i;
                while (e > 0) {
                    if (e & 1)
                        if (__builtin_mul_overflow(result, base, &result)) fail("integer overflow");
                    e >>= 1;
                    if (e > 0 && __builtin_mul_overflow(base, base, &base)) fail("integer overflow");
                }
                return Value::data(Json(result));
            }
            if (x == 0 && y < 0) fail("0.0 cannot be raised to a negative power");
            return Value::data(Json(std::pow(x, y)));
        }
        return unsupported();
    }
    if (op == "+") {
        if (a.is_string() && b.is_string()) {
            check_size(a.str().size() + b.str().size());
            return Value::string(a.str() + b.str());
        }
        if (a.is_array() && b.is_array()) {
            check_items(a.json().size() + b.json().size());
            Json arr = a.json();
            for (const auto& x : b.json()) arr.push_back(x);
            return Value::data(std::move(arr));
        }
        if (a.is_string()) fail(fmt::format("can only concatenate str (not \"{}\") to str", type_name(b)));
        if (a.is_array()) fail(fmt::format("can only concatenate list (not \"{}\") to list", type_name(b)));
        return unsupported();
    }
    if (op == "*") {
        if ((a.is_string() || a.is_array()) && nb && !nb->is_float) return repeat(a, nb->i);
        if ((b.is_string() || b.is_array()) && na && !na->is_float) return repeat(b, na->i);
        return unsupported();
    }
    if (op == "%" && a.is_string()) {
        // str % value. A list is the argument tuple when the format takes two or more values (a
        // tuple is a list here); otherwise, like a dict, it is one value that may go unused.
        if (b.is_array() && detail::printf_argument_count(a.str()) >= 2) return Value::string(printf_format(a.str(), iterate(b), nullptr));
        if (b.is_mapping() || b.is_array()) return Value::string(printf_format(a.str(), {b}, &b));
        return Value::string(printf_format(a.str(), {b}, nullptr));
    }
    return unsupported();
}

// Python's printf-style formatting: %[(name)][flags][width][.precision]type, types s r a d i u
// f F e E g G x X o c and %%.
inline std::string Interpreter::printf_format(const std::string& f, const std::vector<Value>& positional, const Value* mapping) const {
    std::string out;
    std::size_t next = 0;
    bool used_mapping = false;
    for (std::size_t i = 0; i < f.size(); ++i) {
        if (f[i] != '%') {
            out += f[i];
            continue;
        }
        if (++i >= f.size()) fail("incomplete format");
        const Value* arg = nullptr;
        Value keyed;  // the value of a %(key)s field
        if (f[i] == '(') {
            const std::size_t close = f.find(')', i);
            if (close == std::string::npos) fail("incomplete format key");
            if (!mapping) fail("format requires a mapping");
            const Value v = get_item(*mapping, Value::string(f.substr(i + 1, close - i - 1)));
            if (v.is_undefined()) fail("format key '" + f.substr(i + 1, close - i - 1) + "' is missing");
            keyed = v;
            arg = &keyed;
            used_mapping = true;
            i = close + 1;
        }
        std::string flags;
        while (i < f.size() && std::string_view("-+ #0").find(f[i]) != std::string_view::npos) flags += f[i++];
        const auto read_number = [&]() -> std::optional<int> {
            if (i < f.size() && f[i] == '*') fail("'*' widths in formats are not supported");
            std::optional<int> n;
            while (i < f.size() && f[i] >= '0' && f[i] <= '9') n = n.value_or(0) * 10 + (f[i++] - '0');
            return n;
        };
        const std::optional<int> width = read_number();
        std::optional<int> precision;
        if (i < f.size() && f[i] == '.') {
            ++i;
            precision = read_number().value_or(0);
        }
        while (i < f.size() && (f[i] == 'l' || f[i] == 'h' || f[i] == 'L')) ++i;
        if (i >= f.size()) fail("incomplete format");
        const char type = f[i];
        if (type == '%') {
            out += '%';
            continue;
        }
        if (!arg) {
            if (next >= positional.size()) fail("not enough arguments for format string");
            arg = &positional[next++];
        }
        std::string field;
        const auto num = number(*arg);
        switch (type) {
            case 's': field = to_str(*arg); break;
            case 'r':
            case 'a': field = repr(*arg); break;
            case 'c':
                if (arg->is_string() && detail::code_point_count(arg->str()) == 1) field = arg->str();
                else if (num && !num->is_float) detail::append_utf8(field, char32_t(num->i));
                else fail("%c requires an int or a single character");
                break;
            case 'd':
            case 'i':
            case 'u':
            case 'x':
            case 'X':
            case 'o': {
                if (!num) fail(fmt::format("%{} format: a real number is required, not {}", type, type_name(*arg)));
                const std::int64_t v = num->is_float ? std::int64_t(num->f) : num->i;
                const std::uint64_t mag = v < 0 ? std::uint64_t(0) - std::uint64_t(v) : std::uint64_t(v);
                std::string digits = type == 'x' ? fmt::format("{:x}", mag) : type == 'X' ? fmt::format("{:X}", mag)
                                   : type == 'o' ? fmt::format("{:o}", mag) : fmt::format("{}", mag);
                if (precision && int(digits.size()) < *precision) digits.insert(0, std::size_t(*precision) - digits.size(), '0');
                if (flags.find('#') != std::string::npos && type != 'd' && type != 'i' && type != 'u')
                    digits.insert(0, type == 'o' ? "0o" : type == 'x' ? "0x" : "0X");
                field = (v < 0 ? "-" : flags.find('+') != std::string::npos ? "+" : flags.find(' ') != std::string::npos ? " " : "") + digits;
                break;
            }
            case 'f':
            case 'F':
            case 'e':
            case 'E':
            case 'g':
            case 'G': {
                if (!num) fail(fmt::format("%{} format: a real number is required, not {}", type, type_name(*arg)));
                std::string spec = "%";
                for (char c : flags)
                    if (c == '+' || c == ' ' || c == '#') spec += c;
                spec += "." + std::to_string(precision.value_or(6)) + type;
                char buf[512];
                std::snprintf(buf, sizeof buf, spec.c_str(), num->as_double());
                field = buf;
                break;
            }
            default: fail(fmt::format("unsupported format character '{}'", type));
        }
        if ((type == 's' || type == 'r' || type == 'a') && precision) {
            const auto cps = detail::code_point_offsets(field);
            if (std::size_t(*precision) + 1 < cps.size()) field.resize(cps[std::size_t(*precision)]);
        }
        const std::size_t len = detail::code_point_count(field);
        if (width && len < std::size_t(*width)) {
            const std::size_t pad = std::size_t(*width) - len;
            const bool numeric = type != 's' && type != 'r' && type != 'a' && type != 'c';
            if (flags.find('-') != std::string::npos) {
                field.append(pad, ' ');
            } else if (flags.find('0') != std::string::npos && numeric) {
                const std::size_t sign = !field.empty() && (field[0] == '-' || field[0] == '+' || field[0] == ' ') ? 1 : 0;
                field.insert(sign, pad, '0');
            } else {
                field.insert(0, pad, ' ');
            }
        }
        out += field;
        check_size(out.size());
    }
    if (!used_mapping && !mapping && next < positional.size()) fail("not all arguments converted during string formatting");
    return out;
}

inline Value Interpreter::lookup(const std::string& name) const {
    for (const Frame* f = frame_.get(); f; f = f->parent.get())
        for (const auto& [k, v] : f->vars)
            if (k == name) return v;
    // Globals.
    static const std::unordered_map<std::string, NativeFunction> globals = [] {
        std::unordered_map<std::string, NativeFunction> g;
        g["raise_exception"] = [](Interpreter& in, CallArgs& args) -> Value {
            detail::Params p(in, "raise_exception()", args, {"message"});
            throw TemplateRaised(in.where(), p.get(0) ? in.to_str(*p.get(0)) : std::string());
        };
        g["strftime_now"] = [](Interpreter& in, CallArgs& args) -> Value {
            detail::Params p(in, "strftime_now()", args, {"format"});
            if (!p.get(0) || !p.get(0)->is_string()) in.fail("strftime_now() needs a format string");
            const std::time_t now = std::time(nullptr);
            std::tm tm{};
            localtime_r(&now, &tm);
            char buf[512];
            const std::size_t n = std::strftime(buf, sizeof buf, p.get(0)->str().c_str(), &tm);
            return Value::string(std::string(buf, n));
        };
        g["namespace"] = [](Interpreter& in, CallArgs& args) -> Value {
            auto ns = std::make_shared<Object>();
            ns->type = "Namespace";
            ns->assignable = true;
            if (args.positional.size() > 1) in.fail("namespace() takes at most one positional argument");
            const auto add = [&](const std::string& k, Value v) {
                if (detail::starts_with(k, "_"))
                    in.fail("chat templates cannot store underscore-prefixed attributes on a namespace, but got '" + k + "'");
                ns->set(k, std::move(v));
            };
            if (!args.positional.empty()) {
                const Value& init = args.positional[0];
                if (!init.is_mapping()) in.fail("namespace() takes a dict as its positional argument");
                for (const auto& [k, x] : init.json().items()) add(k, init.member(x));
            }
            for (auto& [k, v] : args.keyword) add(k, v);
            return Value::object(std::move(ns));
        };
        g["dict"] = [](Interpreter& in, CallArgs& args) -> Value {
            Json obj = Json::object();
            if (args.positional.size() > 1) in.fail("dict() takes at most one positional argument");
            if (!args.positional.empty()) {
                const Value& init = args.positional[0];
                if (init.is_mapping()) {
                    obj = init.json();
                } else {
                    for (const Value& pair : in.iterate(init)) {
                        const auto kv = in.iterate(pair);
                        if (kv.size() != 2 || !kv[0].is_string()) in.fail("dict() needs key/value pairs with string keys");
                        obj[kv[0].str()] = in.to_storable(kv[1]);
                    }
                }
            }
            for (auto& [k, v] : args.keyword) obj[k] = in.to_storable(v);
            return Value::data(std::move(obj));
        };
        g["range"] = [](Interpreter& in, CallArgs& args) -> Value {
            if (!args.keyword.empty()) in.fail("range() takes no keyword arguments");
            std::vector<std::int64_t> n;
            for (const Value& v : args.positional) {
                const auto x = in.number(v);
                if (!x || x->is_float) in.fail("range() arguments must be integers, got " + type_name(v));
                n.push_back(x->i);
            }
            if (n.empty() || n.size() > 3) in.fail("range() takes 1 to 3 arguments");
            const std::int64_t start = n.size() == 1 ? 0 : n[0], stop = n.size() == 1 ? n[0] : n[1], step = n.size() == 3 ? n[2] : 1;
            if (step == 0) in.fail("range() arg 3 must not be zero");
            long double count = step > 0 ? (static_cast<long double>(stop) - start) / step : (static_cast<long double>(start) - stop) / -step;
            count = std::max<long double>(0, std::ceil(count));
            if (count > static_cast<long double>(in.limits().max_list_items))
                in.fail(fmt::format("range() of {} items is over the limit of {} list items", static_cast<double>(count),
                                    in.limits().max_list_items));
            in.step(std::uint64_t(count));
            Json arr = Json::array();
            for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) arr.push_back(i);
            return Value::data(std::move(arr));
        };
        for (const char* unsupported : {"cycler", "joiner", "lipsum"}) {
            const std::string name = unsupported;
            g[name] = [name](Interpreter& in, CallArgs&) -> Value { in.fail("the global '" + name + "' is not supported"); };
        }
        return g;
    }();
    if (const auto it = globals.find(name); it != globals.end()) return Value::function(name, it->second);
    return Value::undefined("'" + name + "' is undefined");
}

// ---------------------------------------------------------------------------------------------
// Attribute and item access, and the methods of str, dict and list.
namespace detail {

inline std::vector<std::string> split_string(const Interpreter& in, const std::string& s, const Value* sep, const Value* maxsplit_v,
                                             bool from_right) {
    std::int64_t maxsplit = -1;
    if (maxsplit_v) {
        const auto m = in.number(*maxsplit_v);
        if (!m || m->is_float) in.fail("split() maxsplit must be an integer");
        maxsplit = m->i;
    }
    std::vector<std::string> parts;
    if (!sep || sep->is_none()) {
        // Runs of whitespace; leading and trailing whitespace ignored.
        std::vector<std::pair<std::size_t, std::size_t>> words;  // byte ranges
        std::size_t start = std::string::npos;
        for_each_code_point(s, [&](char32_t c, std::size_t i, std::size_t n) {
            if (is_space(c)) {
                if (start != std::string::npos) words.emplace_back(start, i);
                start = std::string::npos;
            } else if (start == std::string::npos) {
                start = i;
            }
            (void)n;
        });
        if (start != std::string::npos) words.emplace_back(start, s.size());
        if (maxsplit < 0 || std::size_t(maxsplit) >= words.size()) {
            for (auto [b, e] : words) parts.push_back(s.substr(b, e - b));
            return parts;
        }
        if (maxsplit == 0) {  // the string without its leading (split) or trailing (rsplit) whitespace
            if (!words.empty()) parts.emplace_back(strip_space(s, !from_right, from_right));
            return parts;
        }
        const auto m = std::size_t(maxsplit);
        if (!from_right) {
            for (std::size_t k = 0; k < m; ++k) parts.push_back(s.substr(words[k].first, words[k].second - words[k].first));
            parts.push_back(s.substr(words[m].first));
        } else {
            const std::size_t first_whole = words.size() - m;
            parts.push_back(s.substr(0, words[first_whole - 1].second));
            for (std::size_t k = first_whole; k < words.size(); ++k) parts.push_back(s.substr(words[k].first, words[k].second - words[k].first));
        }
        return parts;
    }
    if (!sep->is_string()) in.fail("split() separator must be a string or None");
    const std::string& d = sep->str();
    if (d.empty()) in.fail("empty separator");
    if (!from_right) {
        std::size_t start = 0;
        for (std::int64_t k = 0; maxsplit < 0 || k < maxsplit; ++k) {
            const std::size_t at = s.find(d, start);
            if (at == std::string::npos) break;
            parts.push_back(s.substr(start, at - start));
            start = at + d.size();
        }
        parts.push_back(s.substr(start));
    } else {
        std::size_t end = s.size();
        std::vector<std::string> rev;
        for (std::int64_t k = 0; maxsplit < 0 || k < maxsplit; ++k) {
            if (end < d.size()) break;
            const std::size_t at = s.rfind(d, end - d.size());
            if (at == std::string::npos) break;
            rev.push_back(s.substr(at + d.size(), end - at - d.size()));
            end = at;
        }
        rev.push_back(s.substr(0, end));
        parts.assign(rev.rbegin(), rev.rend());
    }
    return parts;
}

inline Value string_list(std::vector<std::string> parts) {
    Json arr = Json::array();
    for (auto& p : parts) arr.push_back(std::move(p));
    return Value::data(std::move(arr));
}

inline std::size_t cp_index_of_byte(const std::string& s, std::size_t byte) { return code_point_count(std::string_view(s).substr(0, byte)); }

inline std::string replace_all(const Interpreter& in, const std::string& s, const std::string& from, const std::string& to, std::int64_t count) {
    std::string out;
    std::int64_t done = 0;
    if (from.empty()) {
        // An empty pattern matches between every code point and at both ends.
        if (count < 0 || done < count) {
            out += to;
            ++done;
        }
        for_each_code_point(s, [&](char32_t, std::size_t i, std::size_t n) {
            out.append(s, i, n);
            if (count < 0 || done < count) {
                out += to;
                ++done;
            }
            in.check_size(out.size());
        });
        return out;
    }
    std::size_t start = 0;
    while (count < 0 || done < count) {
        const std::size_t at = s.find(from, start);
        if (at == std::string::npos) break;
        out.append(s, start, at - start);
        out += to;
        in.check_size(out.size());
        start = at + from.size();
        ++done;
    }
    out.append(s, start, std::string::npos);
    return out;
}

// str.format() with {} / {0} / {name} fields, optional !r / !s, no format specs.
inline std::string format_string(Interpreter& in, const std::string& f, CallArgs& args) {
    std::string out;
    std::size_t auto_index = 0;
    for (std::size_t i = 0; i < f.size(); ++i) {
        const char c = f[i];
        if (c == '}') {
            if (i + 1 < f.size() && f[i + 1] == '}') {
                out += '}';
                ++i;
                continue;
            }
            in.fail("single '}' encountered in format string");
        }
        if (c != '{') {
            out += c;
            continue;
        }
        if (i + 1 < f.size() && f[i + 1] == '{') {
            out += '{';
            ++i;
            continue;
        }
        const std::size_t close = f.find('}', i);
        if (close == std::string::npos) in.fail("single '{' encountered in format string");
        std::string field = f.substr(i + 1, close - i - 1);
        i = close;
        char conversion = 's';
        if (const auto bang = field.find('!'); bang != std::string::npos) {
            conversion = bang + 1 < field.size() ? field[bang + 1] : 's';
            field.resize(bang);
        }
        if (field.find(':') != std::string::npos) in.fail("format specifications in str.format() are not supported");
        const Value* v = nullptr;
        if (field.empty()) {
            if (auto_index >= args.positional.size()) in.fail("str.format() has too few arguments");
            v = &args.positional[auto_index++];
        } else if (std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
            const auto k = std::stoul(field);
            if (k >= args.positional.size()) in.fail("str.format() has too few arguments");
            v = &args.positional[k];
        } else {
            for (auto& [k, x] : args.keyword)
                if (k == field) v = &x;
            if (!v) in.fail("str.format() has no argument named '" + field + "'");
        }
        out += conversion == 'r' ? in.repr(*v) : in.to_str(*v);
    }
    return out;
}

inline Value string_method(Interpreter& in, const std::string& s, const std::string& name, CallArgs& args) {
    const std::string what = "str." + name + "()";
    const auto str_arg = [&](const Value* v, const char* role) -> const std::string& {
        if (!v || !v->is_string()) in.fail(fmt::format("{} needs a string {}", what, role));
        return v->str();
    };
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
        Params p(in, what, args, {"chars"});
        const bool left = name != "rstrip", right = name != "lstrip";
        if (!p.get(0) || p.get(0)->is_none()) return Value::string(std::string(strip_space(s, left, right)));
        return Value::string(std::string(strip_chars(s, str_arg(p.get(0), "of characters"), left, right)));
    }
    if (name == "split" || name == "rsplit") {
        Params p(in, what, args, {"sep", "maxsplit"});
        return string_list(split_string(in, s, p.get(0), p.get(1), name == "rsplit"));
    }
    if (name == "splitlines") {
        Params p(in, what, args, {"keepends"});
        return string_list(split_lines(s, p.get(0) && Interpreter::truthy(*p.get(0))));
    }
    if (name == "startswith" || name == "endswith") {
        Params p(in, what, args, {"prefix"});
        if (!p.get(0)) in.fail(what + " needs an argument");
        std::vector<std::string> options;
        if (p.get(0)->is_array()) {
            for (const auto& x : p.get(0)->json()) {
                if (!x.is_string()) in.fail(what + " needs strings");
                options.push_back(x.get<std::string>());
            }
        } else {
            options.push_back(str_arg(p.get(0), "or a tuple of strings"));
        }
        for (const auto& o : options) {
            if (name == "startswith" ? starts_with(s, o) : (s.size() >= o.size() && s.compare(s.size() - o.size(), o.size(), o) == 0))
                return Value::boolean(true);
        }
        return Value::boolean(false);
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
        Params p(in, what, args, {});
        if (name == "upper") return Value::string(upper(s));
        if (name == "lower") return Value::string(lower(s));
        if (name == "title") return Value::string(title_words(s));
        return Value::string(capitalize(s));
    }
    if (name == "replace") {
        Params p(in, what, args, {"old", "new", "count"});
        std::int64_t count = -1;
        if (p.get(2)) {
            const auto c = in.number(*p.get(2));
            if (!c || c->is_float) in.fail(what + " count must be an integer");
            count = c->i;
        }
        return Value::string(replace_all(in, s, str_arg(p.get(0), "to replace"), str_arg(p.get(1), "to insert"), count));
    }
    if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
        Params p(in, what, args, {"sub"});
        const std::string& sub = str_arg(p.get(0), "to look for");
        if (name == "count") {
            if (sub.empty()) return Value::data(Json(std::int64_t(code_point_count(s) + 1)));
            std::int64_t n = 0;
            for (std::size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
            return Value::data(Json(n));
        }
        const std::size_t at = name[0] == 'r' ? s.rfind(sub) : s.find(sub);
        if (at == std::string::npos) {
            if (name == "index" || name == "rindex") in.fail("substring not found");
            return Value::data(Json(std::int64_t(-1)));
        }
        return Value::data(Json(std::int64_t(cp_index_of_byte(s, at))));
    }
    if (name == "join") {
        Params p(in, what, args, {"iterable"});
        if (!p.get(0)) in.fail(what + " needs an argument");
        std::string out;
        std::size_t k = 0;
        for (const Value& item : in.iterate(*p.get(0))) {
            if (!item.is_string())
                in.fail(fmt::format("sequence item {}: expected str instance, {} found", k, Interpreter::type_name(item)));
            if (k++ > 0) out += s;
            out += item.str();
            in.check_size(out.size());
        }
        return Value::string(std::move(out));
    }
    if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" || name == "isupper" || name == "islower") {
        Params p(in, what, args, {});
        if (s.empty()) return Value::boolean(false);
        bool all = true, any_cased = false;
        for_each_code_point(s, [&](char32_t c, std::size_t, std::size_t) {
            if (name == "isdigit") all = all && is_digit(c);
            else if (name == "isalpha") all = all && is_alpha(c);
            else if (name == "isalnum") all = all && (is_alpha(c) || is_digit(c));
            else if (name == "isspace") all = all && is_space(c);
            else if (name == "isupper") {
                all = all && !is_lower(c);
                any_cased = any_cased || is_upper(c);
            } else {
                all = all && !is_upper(c);
                any_cased = any_cased || is_lower(c);
            }
        });
        if (name == "isupper" || name == "islower") return Value::boolean(all && any_cased);
        return Value::boolean(all);
    }
    if (name == "format") return Value::string(format_string(in, s, args));
    in.fail("'str' object has no method '" + name + "'");
}

inline bool is_string_method(std::string_view n) {
    static const std::string_view names[] = {"strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith",
                                             "upper", "lower", "title", "capitalize", "replace", "find", "rfind", "index", "rindex",
                                             "count", "join", "isdigit", "isalpha", "isalnum", "isspace", "isupper", "islower", "format"};
    return std::find(std::begin(names), std::end(names), n) != std::end(names);
}

inline Value dict_method(Interpreter& in, const Value& d, const std::string& name, CallArgs& args) {
    const std::string what = "dict." + name + "()";
    const Json& j = d.json();
    if (name == "get") {
        Params p(in, what, args, {"key", "default"});
        if (!p.get(0)) in.fail(what + " needs a key");
        if (p.get(0)->is_string()) {
            const auto it = j.find(p.get(0)->str());
            if (it != j.end()) return d.member(*it);
        }
        return p.get(1) ? *p.get(1) : Value::none();
    }
    Params p(in, what, args, {});
    if (name == "keys") {
        Json arr = Json::array();
        for (const auto& [k, x] : j.items()) {
            (void)x;
            arr.push_back(k);
        }
        return Value::data(std::move(arr));
    }
    if (name == "values") {
        Json arr = Json::array();
        for (const auto& [k, x] : j.items()) {
            (void)k;
            arr.push_back(x);
        }
        return Value::data(std::move(arr));
    }
    if (name == "items") {
        Json arr = Json::array();
        for (const auto& [k, x] : j.items()) arr.push_back(Json::array({k, x}));
        return Value::data(std::move(arr));
    }
    if (name == "copy") return d;
    in.fail("'dict' object has no method '" + name + "'");
}

inline Value list_method(Interpreter& in, const Value& l, const std::string& name, CallArgs& args) {
    const std::string what = "list." + name + "()";
    if (name == "copy") {
        Params p(in, what, args, {});
        return l;
    }
    Params p(in, what, args, {"value"});
    if (!p.get(0)) in.fail(what + " needs an argument");
    std::int64_t count = 0;
    for (std::size_t i = 0; i < l.json().size(); ++i) {
        if (!Interpreter::equal(l.element(i), *p.get(0))) continue;
        if (name == "index") return Value::data(Json(std::int64_t(i)));
        ++count;
    }
    if (name == "index") in.fail(in.repr(*p.get(0)) + " is not in list");
    return Value::data(Json(count));
}

inline Value bound_method(const Value& self, const std::string& name) {
    return Value::function(name, [self, name](Interpreter& in, CallArgs& args) -> Value {
        if (self.is_string()) return string_method(in, self.str(), name, args);
        if (self.is_mapping()) return dict_method(in, self, name, args);
        return list_method(in, self, name, args);
    });
}

inline bool is_dict_method(std::string_view n) { return n == "get" || n == "items" || n == "keys" || n == "values" || n == "copy"; }
inline bool is_unsafe_dict_method(std::string_view n) {
    return n == "clear" || n == "pop" || n == "popitem" || n == "setdefault" || n == "update";
}
inline bool is_list_method(std::string_view n) { return n == "index" || n == "count" || n == "copy"; }
inline bool is_unsafe_list_method(std::string_view n) {
    return n == "append" || n == "clear" || n == "pop" || n == "reverse" || n == "insert" || n == "sort" || n == "extend" || n == "remove";
}

}  // namespace detail

inline Value Interpreter::get_attr(const Value& obj, const std::string& name) const {
    const auto missing = [&] { return Value::undefined(fmt::format("'{}' has no attribute '{}'", object_description(obj), name)); };
    const auto unsafe = [&](const char* type) {
        return Value::undefined(fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, type));
    };
    switch (obj.kind()) {
        case Value::Kind::undefined: raise_undefined(obj);
        case Value::Kind::function: return missing();
        case Value::Kind::object: {
            const Object& o = obj.obj();
            if (o.loop_items) return loop_attribute(o, name);
            if (Value* v = obj.obj().find(name)) return *v;
            return missing();
        }
        case Value::Kind::data: break;
    }
    const Json& j = obj.json();
    if (j.is_string()) return detail::is_string_method(name) ? detail::bound_method(obj, name) : missing();
    if (j.is_object()) {
        if (detail::is_dict_method(name)) return detail::bound_method(obj, name);
        if (detail::is_unsafe_dict_method(name)) return unsafe("dict");
        const auto it = j.find(name);
        if (it != j.end()) return obj.member(*it);
        return missing();
    }
    if (j.is_array()) {
        if (detail::is_list_method(name)) return detail::bound_method(obj, name);
        if (detail::is_unsafe_list_method(name)) return unsafe("list");
    }
    return missing();
}

inline Value Interpreter::loop_attribute(const Object& loop, const std::string& name) const {
    const std::size_t i = loop.loop_index, count = loop.loop_items->size();
    if (name == "index") return Value::integer(std::int64_t(i + 1));
    if (name == "index0") return Value::integer(std::int64_t(i));
    if (name == "revindex") return Value::integer(std::int64_t(count - i));
    if (name == "revindex0") return Value::integer(std::int64_t(count - i - 1));
    if (name == "first") return Value::boolean(i == 0);
    if (name == "last") return Value::boolean(i + 1 == count);
    if (name == "length") return Value::integer(std::int64_t(count));
    if (name == "depth") return Value::integer(1);
    if (name == "depth0") return Value::integer(0);
    if (name == "previtem") return i > 0 ? (*loop.loop_items)[i - 1] : Value::undefined("there is no previous item");
    if (name == "nextitem") return i + 1 < count ? (*loop.loop_items)[i + 1] : Value::undefined("there is no next item");
    if (name == "cycle")
        return Value::function("cycle", [i](Interpreter& in, CallArgs& args) -> Value {
            if (args.positional.empty()) in.fail("no items for cycling given");
            return args.positional[i % args.positional.size()];
        });
    return Value::undefined("'LoopContext object' has no attribute '" + name + "'");
}

inline Value Interpreter::get_item(const Value& obj, const Value& key) const {
    if (obj.is_undefined()) raise_undefined(obj);
    const auto missing = [&] {
        if (key.is_string()) return Value::undefined(fmt::format("'{}' has no attribute '{}'", object_description(obj), key.str()));
        return Value::undefined(fmt::format("{} has no element {}", object_description(obj), repr(key)));
    };
    if (obj.is_object()) return key.is_string() ? get_attr(obj, key.str()) : missing();
    if (!obj.is_data()) return missing();
    const Json& j = obj.json();
    if (j.is_object()) {
        if (key.is_string()) {
            const auto it = j.find(key.str());
            if (it != j.end()) return obj.member(*it);
            return get_attr(obj, key.str());
        }
        return missing();
    }
    if (j.is_array() || j.is_string()) {
        const auto n = number(key);
        if (n && !n->is_float) {
            const std::size_t size = j.is_array() ? j.size() : detail::code_point_count(j.get_ref<const std::string&>());
            std::int64_t i = n->i;
            if (i < 0) i += std::int64_t(size);
            if (i < 0 || i >= std::int64_t(size)) return missing();
            if (j.is_array()) return obj.element(std::size_t(i));
            const auto cps = detail::code_point_offsets(j.get_ref<const std::string&>());
            return Value::string(j.get_ref<const std::string&>().substr(cps[std::size_t(i)], cps[std::size_t(i) + 1] - cps[std::size_t(i)]));
        }
        if (key.is_string()) return get_attr(obj, key.str());
        return missing();
    }
    if (key.is_string()) return get_attr(obj, key.str());
    return missing();
}

// ---------------------------------------------------------------------------------------------
// Tests.

inline bool Interpreter::apply_test(const std::string& name, const Value& v, CallArgs& args) {
    const auto arg = [&](const char* what) -> const Value& {
        if (args.positional.size() + args.keyword.size() != 1) fail(fmt::format("test '{}' takes one argument", what));
        return args.positional.empty() ? args.keyword[0].second : args.positional[0];
    };
    const auto no_args = [&] {
        if (!args.positional.empty() || !args.keyword.empty()) fail(fmt::format("test '{}' takes no arguments", name));
    };
    const auto integer = [&](const Value& x) {
        return x.is_data() && (x.json().is_number_integer() || x.json().is_number_unsigned());
    };
    if (name == "defined") return no_args(), !v.is_undefined();
    if (name == "undefined") return no_args(), v.is_undefined();
    if (name == "none") return no_args(), v.is_none();
    if (name == "string") return no_args(), v.is_string();
    if (name == "mapping") return no_args(), v.is_mapping();
    if (name == "number") return no_args(), v.is_number();
    if (name == "integer") return no_args(), integer(v);
    if (name == "float") return no_args(), v.is_data() && v.json().is_number_float();
    if (name == "boolean") return no_args(), v.is_data() && v.json().is_boolean();
    if (name == "true") return no_args(), v.is_data() && v.json().is_boolean() && v.json().get<bool>();
    if (name == "false") return no_args(), v.is_data() && v.json().is_boolean() && !v.json().get<bool>();
    if (name == "callable") return no_args(), v.is_function();
    if (name == "iterable") return no_args(), v.is_undefined() || v.is_string() || v.is_array() || v.is_mapping();
    if (name == "sequence") return no_args(), v.is_undefined() || v.is_string() || v.is_array() || v.is_mapping();
    if (name == "escaped") return no_args(), false;
    if (name == "lower" || name == "upper") {  // str(value).islower() / .isupper()
        no_args();
        CallArgs none;
        return truthy(detail::string_method(*this, to_str(v), name == "lower" ? "islower" : "isupper", none));
    }
    if (name == "odd" || name == "even") {  // value % 2 == 1 / == 0
        no_args();
        const Value rest = eval_binary("%", v, Value::integer(2));
        return equal(rest, Value::integer(name == "odd" ? 1 : 0));
    }
    if (name == "divisibleby") {
        const Value& d = arg("divisibleby");
        const auto a = number(v), b = number(d);
        if (!a || !b) fail("test 'divisibleby' needs numbers");
        if (!a->is_float && !b->is_float) {
            if (b->i == 0) fail("integer division or modulo by zero");
            return a->i % b->i == 0;
        }
        if (b->as_double() == 0) fail("float modulo");
        return std::fmod(a->as_double(), b->as_double()) == 0;
    }
    if (name == "eq" || name == "equalto" || name == "==") return equal(v, arg("eq"));
    if (name == "ne" || name == "!=") return !equal(v, arg("ne"));
    if (name == "lt" || name == "lessthan" || name == "<") return order(v, arg("lt"), "<") < 0;
    if (name == "le" || name == "<=") return order(v, arg("le"), "<=") <= 0;
    if (name == "gt" || name == "greaterthan" || name == ">") return order(v, arg("gt"), ">") > 0;
    if (name == "ge" || name == ">=") return order(v, arg("ge"), ">=") >= 0;
    if (name == "in") return contains(arg("in"), v);
    if (name == "sameas") {
        const Value& other = arg("sameas");
        if (v.is_data() && other.is_data()) {
            const Json &a = v.json(), &b = other.json();
            if (a.is_null() || b.is_null()) return a.is_null() && b.is_null();
            if (a.is_boolean() || b.is_boolean()) return a.is_boolean() && b.is_boolean() && a.get<bool>() == b.get<bool>();
            return &a == &b;
        }
        return equal(v, other) && !v.is_data();
    }
    if (name == "filter" || name == "test") {  // is the value the name of a filter / test?
        no_args();
        const Value& n = v;
        if (!n.is_string()) return false;
        static const std::string_view known_filters[] = {
            "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "forceescape", "format",
            "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace",
            "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title", "tojson", "trim", "unique", "upper",
            "wordcount"};
        static const std::string_view known_tests[] = {
            "defined", "undefined", "none", "string", "mapping", "number", "integer", "float", "boolean", "true", "false", "callable",
            "iterable", "sequence", "escaped", "lower", "upper", "odd", "even", "divisibleby", "eq", "equalto", "==", "ne", "!=", "lt",
            "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "sameas", "filter", "test"};
        if (name == "filter") return std::find(std::begin(known_filters), std::end(known_filters), n.str()) != std::end(known_filters);
        return std::find(std::begin(known_tests), std::end(known_tests), n.str()) != std::end(known_tests);
    }
    fail("unknown test '" + name + "'");
}

// ---------------------------------------------------------------------------------------------
// Filters.
namespace detail {

// Reads a dotted attribute path ("a.b.0") from a value, as the attribute= arguments of filters do.
inline Value attribute_path(const Interpreter& in, Value v, const std::string& path) {
    std::size_t start = 0;
    while (start <= path.size()) {
        const std::size_t dot = path.find('.', start);
        const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
        const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
        v = digits ? in.get_item(v, Value::data(Json(std::int64_t(std::stoll(part))))) : in.get_item(v, Value::string(part));
        if (dot == std::string::npos) break;
        start = dot + 1;
    }
    return v;
}

// Python's round(x, ndigits): exact decimal rounding, ties to even.
inline double round_half_even(double x, std::int64_t digits) {
    if (!std::isfinite(x)) return x;
    if (digits == 0) return std::nearbyint(x);
    if (digits > 0) {
        const std::string text = fmt::format("{:.{}f}", x, std::min<std::int64_t>(digits, 340));
        return std::strtod(text.c_str(), nullptr);
    }
    const double scale = std::pow(10.0, double(-digits));
    return std::nearbyint(x / scale) * scale;
}

}  // namespace detail

inline Value Interpreter::apply_filter(const std::string& name, const Value& v, CallArgs& args) {
    using detail::Params;
    const std::string what = "filter '" + name + "'";
    const auto text = [&](const Value& x) { return to_str(x); };
    const auto as_int = [&](const Value* x, std::int64_t fallback, const char* role) -> std::int64_t {
        if (!x) return fallback;
        const auto n = number(*x);
        if (!n || n->is_float) fail(fmt::format("{}: {} must be an integer", what, role));
        return n->i;
    };
    const auto sort_key = [&](const Value& x, bool case_sensitive, const Value* attribute) -> Value {
        Value k = attribute && !attribute->is_none() ? detail::attribute_path(*this, x, to_str(*attribute)) : x;
        if (!case_sensitive && k.is_string()) return Value::string(detail::lower(k.str()));
        return k;
    };

    if (name == "default" || name == "d") {
        Params p(*this, what, args, {"default_value", "boolean"});
        const bool boolean = p.get(1) && truthy(*p.get(1));
        if (v.is_undefined() || (boolean && !truthy(v))) return p.get(0) ? *p.get(0) : Value::string("");
        return v;
    }
    if (name == "length" || name == "count") {
        Params p(*this, what, args, {});
        return Value::data(Json(std::int64_t(length(v))));
    }
    if (name == "string") {
        Params p(*this, what, args, {});
        return Value::string(text(v));
    }
    if (name == "safe") {
        Params p(*this, what, args, {});
        return Value::string(text(v));
    }
    if (name == "escape" || name == "e" || name == "forceescape") {
        Params p(*this, what, args, {});
        return Value::string(detail::html_escape(text(v)));
    }
    if (name == "trim") {
        Params p(*this, what, args, {"chars"});
        const std::string s = text(v);
        if (p.get(0) && !p.get(0)->is_none()) return Value::string(std::string(detail::strip_chars(s, text(*p.get(0)), true, true)));
        return Value::string(std::string(detail::strip_space(s)));
    }
    if (name == "upper" || name == "lower" || name == "capitalize") {
        Params p(*this, what, args, {});
        const std::string s = text(v);
        return Value::string(name == "upper" ? detail::upper(s) : name == "lower" ? detail::lower(s) : detail::capitalize(s));
    }
    if (name == "title") {
        Params p(*this, what, args, {});
        // Words start after '-', whitespace or an opening bracket; each piece gets an upper-case
        // first code point and lower-case rest.
        const std::string s = text(v);
        std::string out;
        bool word_start = true;
        detail::for_each_code_point(s, [&](char32_t c, std::size_t, std::size_t) {
            const bool separator = c == '-' || detail::is_space(c) || c == '(' || c == '{' || c == '[' || c == '<';
            if (separator) {
                detail::append_utf8(out, c);
                word_start = true;
            } else {
                detail::append_utf8(out, word_start ? detail::to_upper(c) : detail::to_lower(c));
                word_start = false;
            }
        });
        return Value::string(std::move(out));
    }
    if (name == "replace") {
        Params p(*this, what, args, {"old", "new", "count"});
        if (!p.get(0) || !p.get(1)) fail(what + " needs the text to replace and its replacement");
        std::int64_t count = -1;
        if (p.get(2) && !p.get(2)->is_none()) count = as_int(p.get(2), -1, "count");
        return Value::string(detail::replace_all(*this, text(v), text(*p.get(0)), text(*p.get(1)), count));
    }
    if (name == "join") {
        Params p(*this, what, args, {"d", "attribute"});
        const std::string sep = p.get(0) ? text(*p.get(0)) : "";
        std::string out;
        bool first = true;
        for (const Value& item : iterate(v)) {
            if (!first) out += sep;
            first = false;
            out += text(p.get(1) && !p.get(1)->is_none() ? detail::attribute_path(*this, item, text(*p.get(1))) : item);
            check_size(out.size());
        }
        return Value::string(std::move(out));
    }
    if (name == "first" || name == "last") {
        Params p(*this, what, args, {});
        if (v.is_undefined() || (v.is_data() && (v.json().is_array() || v.json().is_object() || v.json().is_string()))) {
            const auto items = iterate(v);
            if (items.empty()) return Value::undefined(fmt::format("No {} item, sequence was empty.", name));
            return name == "first" ? items.front() : items.back();
        }
        fail(fmt::format("'{}' object is not iterable", type_name(v)));
    }
    if (name == "list") {
        Params p(*this, what, args, {});
        return list_value(iterate(v));
    }
    if (name == "reverse") {
        Params p(*this, what, args, {});
        if (v.is_string()) {
            auto items = iterate(v);
            std::string out;
            for (auto it = items.rbegin(); it != items.rend(); ++it) out += it->str();
            return Value::string(std::move(out));
        }
        auto items = iterate(v);
        std::reverse(items.begin(), items.end());
        return list_value(items);
    }
    if (name == "items") {
        Params p(*this, what, args, {});
        if (v.is_undefined()) return Value::data(Json::array());
        if (!v.is_mapping()) fail("Can only get item pairs from a mapping.");
        CallArgs none;
        return detail::dict_method(*this, v, "items", none);
    }
    if (name == "dictsort") {
        Params p(*this, what, args, {"case_sensitive", "by", "reverse"});
        if (!v.is_mapping()) fail(what + " needs a mapping");
        const bool case_sensitive = p.get(0) && truthy(*p.get(0));
        const std::string by = p.get(1) ? text(*p.get(1)) : "key";
        if (by != "key" && by != "value") fail("You can only sort by either 'key' or 'value'");
        const bool reverse = p.get(2) && truthy(*p.get(2));
        std::vector<std::pair<Value, Value>> pairs;
        for (const auto& [k, x] : v.json().items()) pairs.emplace_back(Value::string(k), v.member(x));
        std::stable_sort(pairs.begin(), pairs.end(), [&](const auto& l, const auto& r) {
            const Value a = sort_key(by == "key" ? l.first : l.second, case_sensitive, nullptr);
            const Value b = sort_key(by == "key" ? r.first : r.second, case_sensitive, nullptr);
            return reverse ? order(b, a, "<") < 0 : order(a, b, "<") < 0;
        });
        Json arr = Json::array();
        for (const auto& [k, x] : pairs) arr.push_back(Json::array({k.json(), to_storable(x)}));
        return Value::data(std::move(arr));
    }
    if (name == "sort") {
        Params p(*this, what, args, {"reverse", "case_sensitive", "attribute"});
        const bool reverse = p.get(0) && truthy(*p.get(0));
        const bool case_sensitive = p.get(1) && truthy(*p.get(1));
        auto items = iterate(v);
        std::vector<Value> keys;
        for (const Value& x : items) keys.push_back(sort_key(x, case_sensitive, p.get(2)));
        std::vector<std::size_t> idx(items.size());
        for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
        std::stable_sort(idx.begin(), idx.end(), [&](std::size_t l, std::size_t r) {
            return reverse ? order(keys[r], keys[l], "<") < 0 : order(keys[l], keys[r], "<") < 0;
        });
        std::vector<Value> sorted;
        for (std::size_t i : idx) sorted.push_back(items[i]);
        return list_value(sorted);
    }
    if (name == "unique") {
        Params p(*this, what, args, {"case_sensitive", "attribute"});
        const bool case_sensitive = p.get(0) && truthy(*p.get(0));
        std::vector<Value> seen, out;
        for (const Value& x : iterate(v)) {
            const Value k = sort_key(x, case_sensitive, p.get(1));
            if (k.is_array() || k.is_mapping()) fail("unhashable type: '" + type_name(k) + "'");
            if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return equal(s, k); })) continue;
            seen.push_back(k);
            out.push_back(x);
        }
        return list_value(out);
    }
    if (name == "min" || name == "max") {
        Params p(*this, what, args, {"case_sensitive", "attribute"});
        const bool case_sensitive = p.get(0) && truthy(*p.get(0));
        const auto items = iterate(v);
        if (items.empty()) return Value::undefined(fmt::format("No aggregated item, sequence was empty."));
        std::size_t best = 0;
        for (std::size_t i = 1; i < items.size(); ++i) {
            const int c = order(sort_key(items[i], case_sensitive, p.get(1)), sort_key(items[best], case_sensitive, p.get(1)), "<");
            if (name == "min" ? c < 0 : c > 0) best = i;
        }
        return items[best];
    }
    if (name == "sum") {
        Params p(*this, what, args, {"attribute", "start"});
        Value total = p.get(1) ? *p.get(1) : Value::data(Json(std::int64_t(0)));
        for (const Value& x : iterate(v))
            total = eval_binary("+", total, p.get(0) && !p.get(0)->is_none() ? detail::attribute_path(*this, x, text(*p.get(0))) : x);
        return total;
    }
    if (name == "map") {
        if (!truthy(v)) return Value::data(Json::array());  // a falsy input maps to nothing (even none)
        std::vector<Value> out;
        const auto items = iterate(v);
        const Value* attribute = nullptr;
        const Value* fallback = nullptr;
        for (auto& [k, x] : args.keyword) {
            if (k == "attribute") attribute = &x;
            else if (k == "default") fallback = &x;
        }
        if (attribute) {
            if (!args.positional.empty() || args.keyword.size() > (fallback ? 2u : 1u)) fail(what + ": unexpected arguments with attribute=");
            for (const Value& item : items) {
                Value r = detail::attribute_path(*this, item, text(*attribute));
                if (r.is_undefined() && fallback) r = *fallback;
                out.push_back(r);
            }
            return list_value(out);
        }
        if (args.positional.empty() || !args.positional[0].is_string()) fail(what + " needs a filter name or attribute=");
        const std::string filter = args.positional[0].str();
        for (const Value& item : items) {
            CallArgs rest;
            rest.positional.assign(args.positional.begin() + 1, args.positional.end());
            rest.keyword = args.keyword;
            out.push_back(apply_filter(filter, item, rest));
        }
        return list_value(out);
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
        const bool by_attribute = name.size() > 6;
        const bool keep_when = name[0] == 's';
        if (!truthy(v)) return Value::data(Json::array());  // a falsy input selects nothing (even none)
        std::size_t at = 0;
        std::string attribute;
        if (!args.keyword.empty()) fail(what + " takes no keyword arguments");
        if (by_attribute) {
            if (args.positional.empty()) fail(what + " needs an attribute name");
            attribute = text(args.positional[at++]);
        }
        std::string test;
        if (at < args.positional.size()) {
            if (!args.positional[at].is_string()) fail(what + " needs a test name");
            test = args.positional[at++].str();
        }
        std::vector<Value> out;
        for (const Value& item : iterate(v)) {
            const Value subject = by_attribute ? detail::attribute_path(*this, item, attribute) : item;
            bool pass;
            if (test.empty()) {
                pass = truthy(subject);
            } else {
                CallArgs test_args;
                test_args.positional.assign(args.positional.begin() + std::ptrdiff_t(at), args.positional.end());
                pass = apply_test(test, subject, test_args);
            }
            if (pass == keep_when) out.push_back(item);
        }
        return list_value(out);
    }
    if (name == "tojson") {
        // ensure_ascii=False, indent=None, separators=None, sort_keys=False
        Params p(*this, what, args, {"ensure_ascii", "indent", "separators", "sort_keys"});
        const bool ensure_ascii = p.get(0) && truthy(*p.get(0));
        std::optional<std::string> indent;
        if (p.get(1) && !p.get(1)->is_none()) {
            if (p.get(1)->is_string()) {
                indent = p.get(1)->str();
            } else {
                indent = std::string(std::size_t(std::max<std::int64_t>(0, as_int(p.get(1), 0, "indent"))), ' ');
            }
        }
        std::string item_sep = indent ? "," : ", ", key_sep = ": ";
        if (p.get(2) && !p.get(2)->is_none()) {
            const auto seps = iterate(*p.get(2));
            if (seps.size() != 2 || !seps[0].is_string() || !seps[1].is_string()) fail(what + ": separators must be two strings");
            item_sep = seps[0].str();
            key_sep = seps[1].str();
        }
        return Value::string(to_json_text(v, ensure_ascii, indent, item_sep, key_sep, p.get(3) && truthy(*p.get(3))));
    }
    if (name == "int") {
        Params p(*this, what, args, {"default", "base"});
        const std::int64_t fallback = as_int(p.get(0), 0, "default");
        const std::int64_t base = as_int(p.get(1), 10, "base");
        if (v.is_undefined()) raise_undefined(v);
        if (v.is_string()) {
            std::string s(detail::strip_space(v.str()));
            std::string digits;
            for (char c : s)
                if (c != '_') digits += c;
            bool negative = false;
            std::size_t k = 0;
            if (!digits.empty() && (digits[0] == '+' || digits[0] == '-')) {
                negative = digits[0] == '-';
                k = 1;
            }
            int b = int(base);
            if (b == 0 || b == 16 || b == 8 || b == 2) {
                if (digits.size() > k + 1 && digits[k] == '0') {
                    const char t = char(digits[k + 1] | 0x20);
                    const int prefixed = t == 'x' ? 16 : t == 'o' ? 8 : t == 'b' ? 2 : 0;
                    if (prefixed && (b == 0 || b == prefixed)) {
                        b = prefixed;
                        k += 2;
                    }
                }
                if (b == 0) b = 10;
            }
            std::int64_t r = 0;
            const char* first = digits.data() + k;
            const char* last = digits.data() + digits.size();
            if (first != last && b >= 2 && b <= 36) {
                const auto res = std::from_chars(first, last, r, b);
                if (res.ec == std::errc() && res.ptr == last) return Value::data(Json(negative ? -r : r));
            }
            // int(float(s))
            char* end = nullptr;
            const double d = std::strtod(s.c_str(), &end);
            if (!s.empty() && end == s.c_str() + s.size() && std::isfinite(d) && std::fabs(d) < 9.2e18)
                return Value::data(Json(std::int64_t(d)));
            return Value::data(Json(fallback));
        }
        const auto n = number(v);
        if (!n) return Value::data(Json(fallback));
        if (!n->is_float) return Value::data(Json(n->i));
        if (!std::isfinite(n->f) || std::fabs(n->f) >= 9.2e18) return Value::data(Json(fallback));
        return Value::data(Json(std::int64_t(n->f)));
    }
    if (name == "float") {
        Params p(*this, what, args, {"default"});
        if (v.is_undefined()) raise_undefined(v);
        const Value fallback = p.get(0) ? *p.get(0) : Value::data(Json(0.0));
        if (v.is_string()) {
            std::string s(detail::strip_space(v.str()));
            std::string clean;
            for (char c : s)
                if (c != '_') clean += c;
            const std::string l = detail::lower(clean);
            if (l == "inf" || l == "+inf" || l == "infinity" || l == "+infinity") return Value::data(Json(HUGE_VAL));
            if (l == "-inf" || l == "-infinity") return Value::data(Json(-HUGE_VAL));
            if (l == "nan" || l == "+nan" || l == "-nan") return Value::data(Json(std::nan("")));
            char* end = nullptr;
            const double d = std::strtod(clean.c_str(), &end);
            const bool hex = l.find('x') != std::string::npos;
            if (!clean.empty() && !hex && end == clean.c_str() + clean.size()) return Value::data(Json(d));
            return fallback;
        }
        const auto n = number(v);
        if (!n) return fallback;
        return Value::data(Json(n->as_double()));
    }
    if (name == "abs") {
        Params p(*this, what, args, {});
        if (v.is_undefined()) raise_undefined(v);
        const auto n = number(v);
        if (!n) fail("bad operand type for abs(): '" + type_name(v) + "'");
        if (n->is_float) return Value::data(Json(std::fabs(n->f)));
        if (n->i == std::numeric_limits<std::int64_t>::min()) fail("integer overflow");
        return Value::data(Json(n->i < 0 ? -n->i : n->i));
    }
    if (name == "round") {
        Params p(*this, what, args, {"precision", "method"});
        if (v.is_undefined()) raise_undefined(v);
        const std::int64_t precision = as_int(p.get(0), 0, "precision");
        const std::string method = p.get(1) ? text(*p.get(1)) : "common";
        const auto n = number(v);
        if (!n) fail("type " + type_name(v) + " doesn't define __round__ method");
        if (method == "common") {
            if (!n->is_float) {
                if (precision >= 0) return Value::data(Json(n->i));
                return Value::data(Json(std::int64_t(detail::round_half_even(double(n->i), precision))));
            }
            return Value::data(Json(detail::round_half_even(n->f, precision)));
        }
        if (method != "floor" && method != "ceil") fail("method must be common, ceil or floor");
        const double scale = std::pow(10.0, double(precision));
        const double x = n->as_double() * scale;
        return Value::data(Json((method == "floor" ? std::floor(x) : std::ceil(x)) / scale));
    }
    if (name == "indent") {
        Params p(*this, what, args, {"width", "first", "blank"});
        if (v.is_undefined()) raise_undefined(v);
        if (!v.is_string()) fail(what + " needs a string, got " + type_name(v));
        std::string indention;
        if (p.get(0) && p.get(0)->is_string()) indention = p.get(0)->str();
        else indention = std::string(std::size_t(std::max<std::int64_t>(0, as_int(p.get(0), 4, "width"))), ' ');
        const bool first = p.get(1) && truthy(*p.get(1));
        const bool blank = p.get(2) && truthy(*p.get(2));
        const std::string s = text(v) + "\n";
        const auto lines = detail::split_lines(s);
        std::string out;
        for (std::size_t i = 0; i < lines.size(); ++i) {
            if (i > 0) {
                out += "\n";
                if (blank || !lines[i].empty()) out += indention;
            }
            out += lines[i];
            check_size(out.size());
        }
        if (first) out = indention + out;
        return Value::string(std::move(out));
    }
    if (name == "wordcount") {
        Params p(*this, what, args, {});
        std::int64_t words = 0;
        bool in_word = false;
        detail::for_each_code_point(text(v), [&](char32_t c, std::size_t, std::size_t) {
            const bool word_char = detail::is_alpha(c) || detail::is_digit(c) || c == '_';
            if (word_char && !in_word) ++words;
            in_word = word_char;
        });
        return Value::data(Json(words));
    }
    if (name == "attr") {
        Params p(*this, what, args, {"name"});
        if (!p.get(0) || !p.get(0)->is_string()) fail(what + " needs an attribute name");
        if (v.is_mapping()) {  // attributes only, not keys
            const std::string& a = p.get(0)->str();
            if (detail::is_dict_method(a)) return get_attr(v, a);
            return Value::undefined(fmt::format("'{}' has no attribute '{}'", object_description(v), a));
        }
        return get_attr(v, p.get(0)->str());
    }
    if (name == "format") {  // value % (kwargs or args)
        if (!args.keyword.empty() && !args.positional.empty()) fail(what + " takes positional or keyword arguments, not both");
        if (!args.keyword.empty()) {
            Json mapping = Json::object();
            for (auto& [k, x] : args.keyword) mapping[k] = to_storable(x);
            const Value m = Value::data(std::move(mapping));
            return Value::string(printf_format(text(v), {m}, &m));
        }
        return Value::string(printf_format(text(v), args.positional, nullptr));
    }
    static const std::string_view unsupported[] = {"batch", "center", "filesizeformat", "groupby", "pprint", "random", "slice",
                                                   "striptags", "truncate", "urlencode", "urlize", "wordwrap", "xmlattr"};
    if (std::find(std::begin(unsupported), std::end(unsupported), name) != std::end(unsupported))
        fail("the filter '" + name + "' is not supported");
    fail("unknown filter '" + name + "'");
}

// ---------------------------------------------------------------------------------------------
// A parsed template. Construction parses (syntax errors throw); render() is const and may run
// from several threads at once.
class Template {
public:
    explicit Template(std::string_view source, std::string name = "chat template", Limits limits = {})
        : name_(std::move(name)), limits_(limits) {
        detail::Lexer lexer(source, name_);
        detail::Parser parser(lexer.run(), name_, limits_);
        body_ = std::make_shared<const Body>(parser.parse_template());
    }

    // Renders with `variables` (a JSON object) as the template's variables.
    std::string render(const Json& variables) const {
        Interpreter in(*body_, name_, limits_);
        return in.render(variables);
    }

    const std::string& name() const { return name_; }
    const Limits& limits() const { return limits_; }

private:
    std::string name_;
    Limits limits_;
    std::shared_ptr<const Body> body_;
};

}  // namespace deviant::jinja
