// deviant/train/progress.hpp — a one-line progress bar for long work: done/total, percent,
// elapsed and ETA, tokens per second and a few named values (loss, ...). Redrawn in place on a
// terminal; elsewhere (a log file, CI) it prints a plain line every `log_every` updates.
#pragma once
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace deviant {

class ProgressBar {
public:
    ProgressBar(std::string label, std::int64_t total, bool enabled = true, std::int64_t log_every = 10)
        : label_(std::move(label)), total_(total), enabled_(enabled), tty_(::isatty(2)), log_every_(log_every),
          start_(std::chrono::steady_clock::now()) {}

    // Advances to `done`, adding `tokens` processed since the last update.
    void update(std::int64_t done, std::int64_t tokens, const std::vector<std::pair<std::string, double>>& values = {}) {
        tokens_ += tokens;
        done_ = done;
        if (!enabled_) return;
        if (!tty_ && done % log_every_ != 0 && done != total_) return;
        std::fputs(line(values).c_str(), stderr);
        std::fputs(tty_ ? "\r" : "\n", stderr);
        std::fflush(stderr);
    }
    void finish() {
        if (enabled_ && tty_) std::fputs("\n", stderr);
    }
    double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }
    double tokens_per_second() const { return seconds() > 0 ? double(tokens_) / seconds() : 0.0; }

    std::string line(const std::vector<std::pair<std::string, double>>& values) const {
        double frac = total_ > 0 ? double(done_) / double(total_) : 0.0;
        int width = 24, filled = int(frac * width);
        std::string bar = std::string(std::size_t(filled), '=') + (filled < width ? ">" : "") + std::string(std::size_t(std::max(0, width - filled - 1)), ' ');
        double el = seconds(), eta = frac > 0 ? el * (1 - frac) / frac : 0.0;
        std::string s = fmt::format("{} [{}] {}/{} {:3.0f}% {} ETA {} {:.0f} tok/s", label_, bar, done_, total_, 100 * frac, clock(el), clock(eta),
                                    tokens_per_second());
        for (auto& [k, v] : values) s += fmt::format(" {} {:.4g}", k, v);
        return s;
    }

private:
    static std::string clock(double s) {
        int t = int(s + 0.5);
        return t >= 3600 ? fmt::format("{}h{:02}m", t / 3600, t / 60 % 60) : fmt::format("{}m{:02}s", t / 60, t % 60);
    }
    std::string label_;
    std::int64_t total_, done_ = 0, tokens_ = 0;
    bool enabled_, tty_;
    std::int64_t log_every_;
    std::chrono::steady_clock::time_point start_;
};

}  // namespace deviant
