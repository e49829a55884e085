#ifndef KERASNETS_RESNET8_MODEL_DATA_H_
#define KERASNETS_RESNET8_MODEL_DATA_H_

extern const unsigned char g_resnet8_model_data[];
extern const unsigned int g_resnet8_model_data_size;

#endif  // KERASNETS_RESNET8_MODEL_DATA_H_
