// "Did you mean ...?": the closest of some known names to a mistyped one.
#pragma once

#include <string>
#include <vector>

namespace probing {

// Levenshtein distance between a and b (insertions, deletions, substitutions; an adjacent swap
// counts 2).
size_t edit_distance(const std::string& a, const std::string& b);

// The candidate nearest to `word`, when it is near enough to be what was meant (a distance of at
// most a third of the word's length, and at least 1 for short words); "" when none is.
std::string closest(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace probing
