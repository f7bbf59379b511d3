// deviant/objectives/metrics.hpp — per-step scalar metrics under TRL's names
// (`loss`, `rewards/chosen`, `rewards/margins`, `logps/chosen`, `nll_loss`, ...), kept in insertion
// order so logs and tables read the same every step.
#pragma once
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "deviant/core/tensor.hpp"

namespace deviant {

class Metrics {
public:
    void set(const std::string& name, double value) {
        for (auto& [k, v] : items_)
            if (k == name) {
                v = value;
                return;
            }
        items_.emplace_back(name, value);
    }
    bool contains(const std::string& name) const {
        for (auto& [k, v] : items_)
            if (k == name) return true;
        return false;
    }
    double get(const std::string& name) const {
        for (auto& [k, v] : items_)
            if (k == name) return v;
        fail("no metric named '{}'", name);
    }
    const std::vector<std::pair<std::string, double>>& items() const { return items_; }

private:
    std::vector<std::pair<std::string, double>> items_;
};

// Mean of a tensor's elements as a double (host copy; metrics only).
inline double mean_of(const Tensor& t) {
    auto v = t.to_vector<double>();
    return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
}

}  // namespace deviant
