#ifndef KERASNETS_MODEL_H_
#define KERASNETS_MODEL_H_

#include "resnet14_062_cifar_golden.h"
#include "resnet14_062_cifar_model_data.h"
#include "resnet14_062_cifar_model_settings.h"
#include "resnet14_062_cifar_op_resolver.h"

namespace kn = resnet14_062_cifar_model;
namespace resnet14_062_cifar_model {
inline const unsigned char* const kModelData = g_resnet14_062_cifar_model_data;
constexpr const char* kModelName = "resnet14_062_cifar";
}

#endif  // KERASNETS_MODEL_H_
