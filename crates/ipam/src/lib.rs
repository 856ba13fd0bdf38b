//! Address management: pure allocation logic over the store's compare-and-set.
