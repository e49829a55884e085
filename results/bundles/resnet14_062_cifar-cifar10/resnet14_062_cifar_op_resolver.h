#ifndef KERASNETS_RESNET14_062_CIFAR_OP_RESOLVER_H_
#define KERASNETS_RESNET14_062_CIFAR_OP_RESOLVER_H_

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

namespace resnet14_062_cifar_model {

// Exactly the 5 ops of the model: CONV_2D, ADD, MEAN, FULLY_CONNECTED, SOFTMAX.
constexpr int kNumberOfOps = 5;
using OpResolver = tflite::MicroMutableOpResolver<kNumberOfOps>;

inline TfLiteStatus RegisterOps(OpResolver& resolver) {
  TF_LITE_ENSURE_STATUS(resolver.AddConv2D());
  TF_LITE_ENSURE_STATUS(resolver.AddAdd());
  TF_LITE_ENSURE_STATUS(resolver.AddMean());
  TF_LITE_ENSURE_STATUS(resolver.AddFullyConnected());
  TF_LITE_ENSURE_STATUS(resolver.AddSoftmax());
  return kTfLiteOk;
}

}  // namespace resnet14_062_cifar_model

#endif  // KERASNETS_RESNET14_062_CIFAR_OP_RESOLVER_H_
