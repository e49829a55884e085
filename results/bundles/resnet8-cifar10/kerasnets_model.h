#ifndef KERASNETS_MODEL_H_
#define KERASNETS_MODEL_H_

#include "resnet8_golden.h"
#include "resnet8_model_data.h"
#include "resnet8_model_settings.h"
#include "resnet8_op_resolver.h"

namespace kn = resnet8_model;
namespace resnet8_model {
inline const unsigned char* const kModelData = g_resnet8_model_data;
constexpr const char* kModelName = "resnet8";
}

#endif  // KERASNETS_MODEL_H_
