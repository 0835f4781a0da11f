include $(sort $(wildcard $(BR2_EXTERNAL_RELIQUARY_PATH)/package/*/*.mk))
