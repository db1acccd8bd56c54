// What the YAML config readers (exceptions, protocol table) share: yaml-cpp
// 0.7's YAML::LoadAll never returns on some inputs (a lone ",", found by
// tests/fuzz), so files are read with YAML::Load (the first document) and a
// second document is found by its marker here.
#ifndef SOCKWATCH_AGENT_YAML_DOCS_H_
#define SOCKWATCH_AGENT_YAML_DOCS_H_

#include "absl/strings/string_view.h"

namespace sockwatch {

// The 1-based line where a second YAML document starts (a "---" after
// content, or content after a "..." end marker); 0 when there is none.
int SecondYamlDocumentLine(absl::string_view yaml);

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_YAML_DOCS_H_
