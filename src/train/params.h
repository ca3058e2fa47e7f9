// Trainable tensors by Hugging Face name (spec §9.4 names), stored as flat vectors of Real. A
// gradient set is a second ParamSet with the same layout, so tensor i of one is tensor i of the
// other; the optimizer and the checkpoint writer simply walk the list.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dsv3::train {

template <typename Real>
struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<Real> data;
  // The router's e_score_correction_bias is adjusted by the load-balancing rule, not by gradient.
  bool trainable = true;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

template <typename Real>
class ParamSet {
 public:
  // Adds a zero tensor and returns its index.
  int Add(const std::string& name, std::vector<int64_t> shape, bool trainable = true) {
    Tensor<Real> t{name, std::move(shape), {}, trainable};
    t.data.assign(static_cast<size_t>(t.numel()), Real(0));
    index_[name] = static_cast<int>(tensors_.size());
    tensors_.push_back(std::move(t));
    return static_cast<int>(tensors_.size()) - 1;
  }
  // -1 when absent.
  int Find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? -1 : it->second;
  }
  Real* operator[](int i) { return tensors_[static_cast<size_t>(i)].data.data(); }
  const Real* operator[](int i) const { return tensors_[static_cast<size_t>(i)].data.data(); }
  Tensor<Real>& tensor(int i) { return tensors_[static_cast<size_t>(i)]; }
  const Tensor<Real>& tensor(int i) const { return tensors_[static_cast<size_t>(i)]; }
  int size() const { return static_cast<int>(tensors_.size()); }
  std::vector<Tensor<Real>>& tensors() { return tensors_; }
  const std::vector<Tensor<Real>>& tensors() const { return tensors_; }

  // The same names and shapes, all zero (a gradient set).
  template <typename Other>
  static ParamSet ZerosLike(const ParamSet<Other>& other) {
    ParamSet set;
    for (const auto& t : other.tensors()) set.Add(t.name, t.shape, t.trainable);
    return set;
  }
  void SetZero() {
    for (auto& t : tensors_) std::fill(t.data.begin(), t.data.end(), Real(0));
  }
  int64_t TotalNumel() const {
    int64_t n = 0;
    for (const auto& t : tensors_) n += t.numel();
    return n;
  }

 private:
  std::vector<Tensor<Real>> tensors_;
  std::map<std::string, int> index_;
};

}  // namespace dsv3::train
