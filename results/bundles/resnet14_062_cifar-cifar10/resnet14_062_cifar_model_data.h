#ifndef KERASNETS_RESNET14_062_CIFAR_MODEL_DATA_H_
#define KERASNETS_RESNET14_062_CIFAR_MODEL_DATA_H_

extern const unsigned char g_resnet14_062_cifar_model_data[];
extern const unsigned int g_resnet14_062_cifar_model_data_size;

#endif  // KERASNETS_RESNET14_062_CIFAR_MODEL_DATA_H_
