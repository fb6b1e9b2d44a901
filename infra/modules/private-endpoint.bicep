// One private endpoint for one storage sub-resource (blob, dfs, queue, table), registered in its private DNS zone
// through a privateDnsZoneGroup, so the account's public name resolves to the private address inside the VNet.
param name string
param location string
param tags object
param subnetId string
param storageAccountId string
@allowed(['blob', 'dfs', 'queue', 'table'])
param groupId string
param privateDnsZoneId string

resource endpoint 'Microsoft.Network/privateEndpoints@2023-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    subnet: { id: subnetId }
    privateLinkServiceConnections: [{ name: groupId, properties: { privateLinkServiceId: storageAccountId, groupIds: [groupId] } }]
  }
}

resource zoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [{ name: replace(last(split(privateDnsZoneId, '/')), '.', '-'), properties: { privateDnsZoneId: privateDnsZoneId } }]
  }
}
