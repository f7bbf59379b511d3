// deviant/core/shape.hpp — Shape: a small fixed-capacity list of extents (at most 8 dims),
// also used for strides. Printing shapes is how every mismatch error names its operands.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "deviant/core/error.hpp"

namespace deviant {

class Shape {
public:
    static constexpr int max_dims = 8;

    Shape() = default;
    Shape(std::initializer_list<std::int64_t> dims) {
        DEVIANT_REQUIRE(dims.size() <= max_dims, "shape has {} dims, at most {} supported", dims.size(), max_dims);
        for (auto d : dims) push_back(d);
    }
    template <class It>
    Shape(It first, It last) {
        for (; first != last; ++first) push_back(static_cast<std::int64_t>(*first));
    }

    int size() const { return rank_; }
    int rank() const { return rank_; }
    bool empty() const { return rank_ == 0; }
    std::int64_t operator[](int i) const { return d_[normalize(i)]; }
    std::int64_t& operator[](int i) { return d_[normalize(i)]; }
    const std::int64_t* begin() const { return d_.data(); }
    const std::int64_t* end() const { return d_.data() + rank_; }
    std::int64_t back() const { return d_[rank_ - 1]; }

    void push_back(std::int64_t v) {
        DEVIANT_REQUIRE(rank_ < max_dims, "shape would exceed {} dims", max_dims);
        d_[rank_++] = v;
    }
    void insert(int pos, std::int64_t v) {
        DEVIANT_REQUIRE(rank_ < max_dims && pos >= 0 && pos <= rank_, "bad shape insert at {}", pos);
        for (int i = rank_; i > pos; --i) d_[i] = d_[i - 1];
        d_[pos] = v;
        ++rank_;
    }
    void erase(int pos) {
        pos = normalize(pos);
        for (int i = pos; i + 1 < rank_; ++i) d_[i] = d_[i + 1];
        --rank_;
    }

    std::int64_t numel() const {
        std::int64_t n = 1;
        for (int i = 0; i < rank_; ++i) n *= d_[i];
        return n;
    }
    // Normalises a possibly negative axis; throws naming the shape if it is out of range.
    int normalize(int axis) const {
        int a = axis < 0 ? axis + rank_ : axis;
        DEVIANT_REQUIRE(a >= 0 && a < rank_, "axis {} out of range for shape {}", axis, str());
        return a;
    }

    friend bool operator==(const Shape& a, const Shape& b) {
        return a.rank_ == b.rank_ && std::equal(a.begin(), a.end(), b.begin());
    }
    friend bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }

    std::string str() const {
        std::string s = "(";
        for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(d_[i]);
        return s + (rank_ == 1 ? ",)" : ")");
    }

    // Row-major contiguous strides for this shape.
    Shape contiguous_strides() const {
        Shape s;
        s.rank_ = rank_;
        std::int64_t acc = 1;
        for (int i = rank_ - 1; i >= 0; --i) {
            s.d_[i] = acc;
            acc *= d_[i];
        }
        return s;
    }

private:
    std::array<std::int64_t, max_dims> d_{};
    int rank_ = 0;
};

// Numpy broadcasting of two shapes; throws naming both shapes when they cannot broadcast.
inline Shape broadcast_shapes(const Shape& a, const Shape& b) {
    int r = std::max(a.rank(), b.rank());
    Shape out;
    for (int i = 0; i < r; ++i) {
        int ia = a.rank() - r + i, ib = b.rank() - r + i;
        std::int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
        DEVIANT_REQUIRE(da == db || da == 1 || db == 1, "shapes {} and {} cannot be broadcast", a.str(), b.str());
        out.push_back(da == 1 ? db : da);
    }
    return out;
}

}  // namespace deviant
